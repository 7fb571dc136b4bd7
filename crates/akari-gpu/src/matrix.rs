//! Weight matrices on the device, in their file layout.

use crate::{GpuContext, GpuError};
use akari_core::weights::Matrix;
use akari_core::QuantFormat;

/// A `[rows, cols]` weight matrix in storage buffers: the bytes exactly as
/// [`akari_core::quant`] lays them out (rows contiguous, whole blocks per row), padded with
/// zero words. A matrix larger than one binding may cover (`maxStorageBufferBindingSize`,
/// 128 MiB by default in browsers) is split by rows into parts that each fit; kernels run
/// once per part and write its rows at their offset.
#[derive(Debug)]
pub struct GpuMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    parts: Vec<MatrixPart>,
}

/// Rows `first..first + rows` of a [`GpuMatrix`], in a buffer of their own.
#[derive(Debug)]
pub struct MatrixPart {
    pub first: usize,
    pub rows: usize,
    pub buffer: wgpu::Buffer,
}

/// Rows per part: a multiple of 64 (the GEMM's row tile) unless one part holds them all.
const PART_ROW_ALIGN: usize = 64;

impl GpuMatrix {
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row ranges and their buffers, in row order; one part when the matrix fits a
    /// binding.
    pub fn parts(&self) -> &[MatrixPart] {
        &self.parts
    }
}

impl GpuContext {
    /// Copies `m` to the device as stored, split by rows where it exceeds one binding.
    pub fn upload_matrix(&self, m: &Matrix) -> Result<GpuMatrix, GpuError> {
        self.upload_matrix_bytes(m.format, m.rows, m.cols, &m.bytes)
    }

    /// [`GpuContext::upload_matrix`] from raw bytes.
    pub fn upload_matrix_bytes(
        &self,
        format: QuantFormat,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<GpuMatrix, GpuError> {
        const OP: &str = "upload_matrix";
        if !cols.is_multiple_of(format.block_size()) {
            return Err(GpuError::Shape {
                op: OP,
                what: "columns (a multiple of the block size)",
                expected: cols.next_multiple_of(format.block_size()),
                got: cols,
            });
        }
        let row_bytes = format.row_bytes(cols);
        let expected = rows * row_bytes;
        if bytes.len() != expected {
            return Err(GpuError::Shape {
                op: OP,
                what: "byte length",
                expected,
                got: bytes.len(),
            });
        }
        let per_part = self
            .rows_per_part(row_bytes)
            .ok_or_else(|| GpuError::TooLarge {
                what: format!("one row of a {format} matrix [{rows}, {cols}]"),
                bytes: row_bytes as u64,
                limit: self.matrix_binding_limit(),
            })?;
        let parts = (0..rows.max(1))
            .step_by(per_part)
            .map(|first| {
                let n = per_part.min(rows - first);
                let label = format!(
                    "akari.matrix.{format}[{rows},{cols}] rows {first}..{}",
                    first + n
                );
                let buffer = self
                    .storage_buffer(&label, &bytes[first * row_bytes..(first + n) * row_bytes])?;
                Ok(MatrixPart {
                    first,
                    rows: n,
                    buffer,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(GpuMatrix {
            format,
            rows,
            cols,
            parts,
        })
    }

    /// The rows of `ms` (one format and width, each in one part) one after another in a new
    /// matrix, copied on the device. `None` when they cannot be: a matrix's bytes are not
    /// whole words (copies move words), or together they exceed one binding.
    pub fn concat_rows(&self, ms: &[&GpuMatrix]) -> Result<Option<GpuMatrix>, GpuError> {
        let Some(first) = ms.first() else {
            return Ok(None);
        };
        let (format, cols) = (first.format, first.cols);
        let row_bytes = format.row_bytes(cols) as u64;
        let fits = ms.iter().all(|m| {
            m.format == format
                && m.cols == cols
                && m.parts.len() == 1
                && (m.rows as u64 * row_bytes).is_multiple_of(4)
        });
        let rows: usize = ms.iter().map(|m| m.rows).sum();
        let total = rows as u64 * row_bytes;
        if !fits || total + 4 > self.matrix_binding_limit() {
            return Ok(None);
        }
        let label = format!(
            "akari.matrix.{format}[{rows},{cols}] (rows of {})",
            ms.len()
        );
        let buffer = self.new_storage(&label, total + 4, u64::MAX)?;
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("akari.concat_rows"),
            });
        let mut at = 0;
        for m in ms {
            let bytes = m.rows as u64 * row_bytes;
            encoder.copy_buffer_to_buffer(&m.parts[0].buffer, 0, &buffer, at, bytes);
            at += bytes;
        }
        self.queue().submit([encoder.finish()]);
        self.check(&label)?;
        Ok(Some(GpuMatrix {
            format,
            rows,
            cols,
            parts: vec![MatrixPart {
                first: 0,
                rows,
                buffer,
            }],
        }))
    }

    /// How many rows of `row_bytes` one part holds: as many as fit a binding (with the
    /// padding word), in multiples of [`PART_ROW_ALIGN`] when more than that fit; byte
    /// offsets inside the kernels are u32, which caps a part at 4 GiB. `None` when not even
    /// one row fits.
    fn rows_per_part(&self, row_bytes: usize) -> Option<usize> {
        let limit = self.matrix_binding_limit().min(u64::from(u32::MAX));
        let fit = (limit.saturating_sub(8) / row_bytes.max(1) as u64) as usize;
        match fit {
            0 => None,
            n if n >= PART_ROW_ALIGN => Some(n / PART_ROW_ALIGN * PART_ROW_ALIGN),
            n => Some(n),
        }
    }
}
