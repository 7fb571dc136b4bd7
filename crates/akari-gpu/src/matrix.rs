//! Weight matrices on the device, in their file layout.

use crate::{GpuContext, GpuError};
use akari_core::weights::Matrix;
use akari_core::QuantFormat;

/// A `[rows, cols]` weight matrix in a storage buffer: the bytes exactly as
/// [`akari_core::quant`] lays them out (rows contiguous, whole blocks per row), padded with
/// zero words.
#[derive(Debug)]
pub struct GpuMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    buffer: wgpu::Buffer,
}

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

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl GpuContext {
    /// Copies `m` to the device as stored. Fails when the matrix does not fit one binding
    /// (`maxStorageBufferBindingSize`).
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
        let expected = rows * format.row_bytes(cols);
        if bytes.len() != expected {
            return Err(GpuError::Shape {
                op: OP,
                what: "byte length",
                expected,
                got: bytes.len(),
            });
        }
        // Offsets inside the kernels are u32.
        if u32::try_from(bytes.len()).is_err() {
            return Err(GpuError::TooLarge {
                what: format!("{format} matrix [{rows}, {cols}]"),
                bytes: bytes.len() as u64,
                limit: u64::from(u32::MAX),
            });
        }
        let label = format!("akari.matrix.{format}[{rows},{cols}]");
        let buffer = self.storage_buffer(&label, bytes)?;
        Ok(GpuMatrix {
            format,
            rows,
            cols,
            buffer,
        })
    }
}
