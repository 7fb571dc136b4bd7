//! Which files of a repository a dtype needs, from the repository's file list alone.
//!
//! - GGUF repositories: one `.gguf`, by `--file` or by the quantisation tag in its name.
//! - transformers.js ONNX repositories: config and tokenizer files plus the `onnx/model*.onnx`
//!   that transformers.js loads for the dtype (the mapping is `akari_formats::onnx`'s, the one
//!   local folders use) and its external data files.
//! - safetensors repositories: config, tokenizer files and every `.safetensors` (+ index).

use crate::error::{HubError, Result};
use akari_core::Dtype;
use akari_formats::{hf, onnx};

/// What to download and how to open it afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Paths inside the repository, in download order (small files first).
    pub files: Vec<String>,
    /// The file to open, or `None` to open the repository folder.
    pub entry: Option<String>,
    /// The dtype to load with. A file picked for a dtype already is that dtype: it is loaded
    /// as stored (`Auto` for GGUF, the exact ONNX dtype so the engine opens the same file).
    pub load_dtype: Dtype,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gguf,
    Onnx,
    Safetensors,
}

/// Tokenizer and generation files taken along with ONNX and safetensors weights, when listed.
const SIDE_FILES: &[&str] = &[
    hf::TOKENIZER_CONFIG,
    hf::GENERATION_CONFIG,
    hf::CHAT_TEMPLATE_JINJA,
    hf::CHAT_TEMPLATE_JSON,
    "special_tokens_map.json",
];

/// GGUF quantisation tags for a dtype, in order of preference.
fn gguf_tags(dtype: Dtype) -> &'static [&'static str] {
    match dtype {
        Dtype::Auto => &["Q4_K_M", "Q4_0", "Q4_1", "Q8_0", "F16"],
        Dtype::Q4 | Dtype::Q4f16 | Dtype::Bnb4 => &["Q4_K_M", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K"],
        Dtype::Q8 | Dtype::Int8 | Dtype::Uint8 => &["Q8_0"],
        Dtype::Fp16 => &["F16"],
        Dtype::Fp32 => &["F32"],
    }
}

/// Whether `tag` appears in a file name as a word of its own: `Q4_0` in `x.Q4_0.gguf` or
/// `x-q4_0.gguf`, but not `F16` in `x-BF16.gguf`.
fn has_tag(file: &str, tag: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file).to_ascii_uppercase();
    let stem = name.strip_suffix(".GGUF").unwrap_or(&name);
    let bytes = stem.as_bytes();
    stem.match_indices(tag).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + tag.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

fn no_match(repo: &str, dtype: Dtype, wanted: &[&str], choices: &[&String]) -> HubError {
    HubError::NoMatchingFile {
        repo: repo.to_string(),
        dtype: dtype.name().to_string(),
        wanted: wanted.join(" / "),
        choices: if choices.is_empty() {
            "none".to_string()
        } else {
            choices
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
    }
}

/// Picks the files for `dtype` (or the one `file`) from a repository's listing.
pub fn select(
    repo: &str,
    siblings: &[String],
    dtype: Dtype,
    file: Option<&str>,
) -> Result<Selection> {
    let listed = |p: &str| siblings.iter().any(|s| s == p);
    let ggufs: Vec<&String> = siblings
        .iter()
        .filter(|s| s.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    let onnx_files: Vec<&String> = siblings.iter().filter(|s| s.ends_with(".onnx")).collect();

    if let Some(file) = file {
        if !listed(file) {
            let mut choices = ggufs.clone();
            choices.extend(onnx_files.iter().copied());
            return Err(no_match(repo, dtype, &[file], &choices));
        }
        if file.ends_with(".onnx") {
            let mut sel = onnx_selection(repo, siblings, file)?;
            sel.entry = Some(file.to_string());
            sel.load_dtype = dtype;
            return Ok(sel);
        }
        return Ok(Selection {
            files: vec![file.to_string()],
            entry: Some(file.to_string()),
            load_dtype: dtype,
            kind: Kind::Gguf,
        });
    }

    if !ggufs.is_empty() {
        let tags = gguf_tags(dtype);
        let chosen = tags
            .iter()
            .find_map(|t| ggufs.iter().find(|f| has_tag(f, t)))
            .or_else(|| (dtype == Dtype::Auto && ggufs.len() == 1).then(|| &ggufs[0]));
        let Some(chosen) = chosen else {
            return Err(no_match(repo, dtype, tags, &ggufs));
        };
        return Ok(Selection {
            files: vec![chosen.to_string()],
            entry: Some(chosen.to_string()),
            load_dtype: Dtype::Auto,
            kind: Kind::Gguf,
        });
    }

    if !onnx_files.is_empty() {
        // transformers.js keeps its files in onnx/; onnxruntime-genai folders at the top.
        let folder = if onnx_files.iter().any(|f| f.starts_with("onnx/")) {
            "onnx/"
        } else {
            ""
        };
        let in_folder: Vec<&String> = onnx_files
            .iter()
            .copied()
            .filter(|f| {
                f.strip_prefix(folder)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .collect();
        let wanted = onnx::candidates(dtype);
        let chosen = wanted
            .iter()
            .map(|w| format!("{folder}{w}"))
            .find(|p| listed(p))
            .or_else(|| {
                (dtype == Dtype::Auto && in_folder.len() == 1).then(|| in_folder[0].clone())
            });
        let Some(chosen) = chosen else {
            return Err(no_match(repo, dtype, wanted, &in_folder));
        };
        let mut sel = onnx_selection(repo, siblings, &chosen)?;
        // Load with the dtype whose file this is, so the engine opens the same file; a file
        // no dtype names (the only one there) is opened directly.
        let base = &chosen[folder.len()..];
        match Dtype::ALL
            .into_iter()
            .find(|d| *d != Dtype::Auto && onnx::file_for(*d) == base)
        {
            Some(d) => sel.load_dtype = d,
            None => sel.entry = Some(chosen),
        }
        return Ok(sel);
    }

    let weights: Vec<&String> = siblings
        .iter()
        .filter(|s| !s.contains('/') && s.ends_with(".safetensors"))
        .collect();
    if !weights.is_empty() {
        let mut files = required(repo, siblings, &[hf::CONFIG, hf::TOKENIZER])?;
        files.extend(side_files(siblings));
        if listed(hf::WEIGHTS_INDEX) {
            files.push(hf::WEIGHTS_INDEX.to_string());
        }
        files.extend(weights.into_iter().cloned());
        return Ok(Selection {
            files,
            entry: None,
            load_dtype: dtype,
            kind: Kind::Safetensors,
        });
    }

    Err(HubError::UnknownLayout {
        repo: repo.to_string(),
        reason: format!(
            "no .gguf, .onnx or .safetensors files to load (files: {})",
            if siblings.is_empty() {
                "none".to_string()
            } else {
                siblings.join(", ")
            }
        ),
    })
}

fn required(repo: &str, siblings: &[String], names: &[&str]) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| {
            if siblings.iter().any(|s| s == n) {
                Ok(n.to_string())
            } else {
                Err(HubError::UnknownLayout {
                    repo: repo.to_string(),
                    reason: format!("the repository has no {n}, which akari needs to load it"),
                })
            }
        })
        .collect()
}

fn side_files(siblings: &[String]) -> impl Iterator<Item = String> + '_ {
    SIDE_FILES
        .iter()
        .filter(|f| siblings.iter().any(|s| s == *f))
        .map(|f| f.to_string())
}

/// The files an ONNX model file needs: its repository's config and tokenizer files, the file,
/// and its external data (`model.onnx_data`, `model.onnx_data_1`, … or `model.onnx.data`).
fn onnx_selection(repo: &str, siblings: &[String], model: &str) -> Result<Selection> {
    let config = if siblings.iter().any(|s| s == hf::CONFIG) {
        hf::CONFIG
    } else {
        onnx::GENAI_CONFIG
    };
    let mut files = required(repo, siblings, &[config, hf::TOKENIZER])?;
    files.extend(side_files(siblings));
    files.push(model.to_string());
    let data_prefix = format!("{model}_data");
    let genai_data = format!("{model}.data");
    files.extend(
        siblings
            .iter()
            .filter(|s| s.starts_with(&data_prefix) || **s == genai_data)
            .cloned(),
    );
    Ok(Selection {
        files,
        entry: None,
        load_dtype: Dtype::Auto,
        kind: Kind::Onnx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gguf_by_dtype() {
        let s = list(&[
            "README.md",
            "SmolLM2-135M-Instruct.F16.gguf",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "SmolLM2-135M-Instruct.Q8_0.gguf",
            "SmolLM2-135M-Instruct.BF16.gguf",
        ]);
        let pick = |d| select("r/x", &s, d, None).map(|s| s.files);
        assert_eq!(
            pick(Dtype::Auto).unwrap(),
            ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        );
        assert_eq!(
            pick(Dtype::Q4).unwrap(),
            ["SmolLM2-135M-Instruct.Q4_1.gguf"]
        );
        assert_eq!(
            pick(Dtype::Q8).unwrap(),
            ["SmolLM2-135M-Instruct.Q8_0.gguf"]
        );
        assert_eq!(
            pick(Dtype::Fp16).unwrap(),
            ["SmolLM2-135M-Instruct.F16.gguf"]
        );
        let err = pick(Dtype::Fp32).unwrap_err().to_string();
        assert!(
            err.contains("F32") && err.contains("SmolLM2-135M-Instruct.BF16.gguf"),
            "{err}"
        );
        let sel = select("r/x", &s, Dtype::Q4, Some("SmolLM2-135M-Instruct.F16.gguf")).unwrap();
        assert_eq!(sel.entry.as_deref(), Some("SmolLM2-135M-Instruct.F16.gguf"));
        assert_eq!(sel.load_dtype, Dtype::Q4);
        assert!(select("r/x", &s, Dtype::Q4, Some("nope.gguf")).is_err());
    }

    #[test]
    fn gguf_tags_prefer_k_m_and_match_whole_words() {
        let s = list(&["m-q4_k_s.gguf", "m-q4_k_m.gguf", "m-q4_0.gguf"]);
        assert_eq!(
            select("r/x", &s, Dtype::Auto, None).unwrap().files,
            ["m-q4_k_m.gguf"]
        );
        assert!(!has_tag("m-BF16.gguf", "F16"));
        assert!(has_tag("ggml-model-f16.gguf", "F16"));
    }

    #[test]
    fn onnx_by_dtype() {
        let s = list(&[
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "onnx/model.onnx",
            "onnx/model.onnx_data",
            "onnx/model_q4.onnx",
            "onnx/model_fp16.onnx",
            "onnx/model_fp16.onnx_data",
            "onnx/model_fp16.onnx_data_1",
        ]);
        let sel = select("r/x", &s, Dtype::Auto, None).unwrap();
        assert_eq!(
            sel.files,
            [
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "generation_config.json",
                "onnx/model_q4.onnx"
            ]
        );
        assert_eq!((sel.entry, sel.load_dtype), (None, Dtype::Q4));
        let sel = select("r/x", &s, Dtype::Fp16, None).unwrap();
        assert_eq!(
            &sel.files[4..],
            [
                "onnx/model_fp16.onnx",
                "onnx/model_fp16.onnx_data",
                "onnx/model_fp16.onnx_data_1"
            ]
        );
        let sel = select("r/x", &s, Dtype::Fp32, None).unwrap();
        assert_eq!(&sel.files[4..], ["onnx/model.onnx", "onnx/model.onnx_data"]);
        let err = select("r/x", &s, Dtype::Q8, None).unwrap_err().to_string();
        assert!(
            err.contains("model_quantized.onnx") && err.contains("onnx/model_q4.onnx"),
            "{err}"
        );
    }

    #[test]
    fn safetensors_and_unknown() {
        let s = list(&[
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "README.md",
        ]);
        let sel = select("r/x", &s, Dtype::Q8, None).unwrap();
        assert_eq!(
            sel.files,
            ["config.json", "tokenizer.json", "model.safetensors"]
        );
        assert_eq!(sel.load_dtype, Dtype::Q8);
        let err = select("r/x", &list(&["README.md"]), Dtype::Auto, None).unwrap_err();
        assert!(err.to_string().contains("README.md"));
    }
}
