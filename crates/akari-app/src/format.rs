//! Numbers as people read them: sizes, speeds, durations, reply statistics.
use crate::types::{ModelInfo, Stats};

/// A byte count in decimal units ("98.0 MB"), as download sizes are usually quoted.
pub fn bytes(n: f64) -> String {
    if !n.is_finite() || n < 0.0 {
        return "?".to_string();
    }
    const UNITS: [&str; 5] = ["KB", "MB", "GB", "TB", "PB"];
    if n < 1000.0 {
        return format!("{} B", n.round() as u64);
    }
    let mut value = n / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A transfer rate ("5.1 MB/s").
pub fn speed(bytes_per_second: f64) -> String {
    format!("{}/s", bytes(bytes_per_second))
}

/// One line under a file's progress bar.
pub fn progress(loaded: Option<f64>, total: Option<f64>, bytes_per_second: Option<f64>) -> String {
    let mut line = match (loaded, total) {
        (Some(l), Some(t)) if t > 0.0 => {
            format!("{} of {} ({:.0}%)", bytes(l), bytes(t), percent(l, t))
        }
        (Some(l), _) => bytes(l),
        (None, Some(t)) => format!("0 B of {}", bytes(t)),
        (None, None) => String::new(),
    };
    if let Some(bps) = bytes_per_second.filter(|b| b.is_finite() && *b > 0.0) {
        if !line.is_empty() {
            line.push_str(" · ");
        }
        line.push_str(&speed(bps));
    }
    line
}

/// Share done, clamped to 0..=100.
pub fn percent(loaded: f64, total: f64) -> f64 {
    if total > 0.0 && loaded.is_finite() {
        (loaded / total * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

/// A duration in seconds: tenths below ten seconds, whole seconds above.
pub fn seconds(ms: f64) -> String {
    let s = (ms.max(0.0)) / 1000.0;
    if s < 9.95 {
        format!("{s:.1} s")
    } else {
        format!("{} s", s.round() as u64)
    }
}

/// The title of a finished reasoning block.
pub fn thought_for(ms: f64) -> String {
    format!("Thought for {}", seconds(ms))
}

/// Tokens per second, or `None` before there is a time to divide by.
pub fn rate(tokens: u64, ms: f64) -> Option<f64> {
    (ms > 0.0 && tokens > 0).then(|| tokens as f64 * 1000.0 / ms)
}

/// A token rate ("34.5 tok/s").
pub fn tokens_per_second(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0} tok/s")
    } else {
        format!("{rate:.1} tok/s")
    }
}

/// The statistics line shown under a finished reply.
pub fn stats(s: &Stats) -> String {
    let mut parts = vec![
        format!("first token {}", milliseconds(s.time_to_first_token_ms)),
        format!("prefill {}", tokens_per_second(s.prefill_tokens_per_second)),
        format!("decode {}", tokens_per_second(s.decode_tokens_per_second)),
        format!(
            "{} prompt + {} generated tokens",
            s.prompt_tokens, s.generated_tokens
        ),
    ];
    if let Some(reason) = stop_reason(&s.stop_reason) {
        parts.push(reason);
    }
    parts.join(" · ")
}

fn milliseconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{} ms", ms.max(0.0).round() as u64)
    } else {
        seconds(ms)
    }
}

/// Stop reasons worth a word; the usual end of turn needs none.
fn stop_reason(reason: &str) -> Option<String> {
    match reason {
        "" | "end_of_turn" | "stop_string" | "eos" | "stop" => None,
        "max_tokens" | "length" => Some("stopped at the token limit".to_string()),
        "cancelled" | "aborted" => Some("stopped".to_string()),
        "context_full" | "context" => Some("the context is full".to_string()),
        other => Some(format!("ended: {}", other.replace('_', " "))),
    }
}

/// A parameter count ("135 M", "1.5 B").
pub fn parameters(n: f64) -> String {
    if !n.is_finite() || n <= 0.0 {
        String::new()
    } else if n >= 1e9 {
        format!("{:.1} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.0} M", n / 1e6)
    } else {
        format!("{:.0} K", n / 1e3)
    }
}

/// One line describing the loaded model.
pub fn model_info(info: &ModelInfo) -> String {
    let mut parts = vec![info.name.clone()];
    for part in [&info.architecture, &info.dtype, &info.device] {
        if !part.is_empty() {
            parts.push(part.clone());
        }
    }
    let params = parameters(info.parameters);
    if !params.is_empty() {
        parts.push(format!("{params} parameters"));
    }
    if info.context_length > 0 {
        parts.push(format!("context {}", info.context_length));
    }
    // The engine notes after `; ` what it had to change, e.g. WebNN weights dequantised at
    // load because the browser's dequantizeLinear lacks their data type.
    if let Some((_, note)) = info.backend.split_once("; ") {
        parts.push(note.to_string());
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0.0), "0 B");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(1500.0), "1.5 KB");
        assert_eq!(bytes(98_000_000.0), "98.0 MB");
        assert_eq!(bytes(999_990.0), "1.0 MB");
        assert_eq!(bytes(1_234_000_000.0), "1.2 GB");
        assert_eq!(bytes(f64::NAN), "?");
        assert_eq!(speed(5_100_000.0), "5.1 MB/s");
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress(Some(12_300_000.0), Some(98_000_000.0), Some(5_100_000.0)),
            "12.3 MB of 98.0 MB (13%) · 5.1 MB/s"
        );
        assert_eq!(progress(Some(2000.0), None, None), "2.0 KB");
        assert_eq!(progress(None, None, Some(0.0)), "");
        assert_eq!(percent(5.0, 0.0), 0.0);
        assert_eq!(percent(150.0, 100.0), 100.0);
    }

    #[test]
    fn durations_and_rates() {
        assert_eq!(seconds(0.0), "0.0 s");
        assert_eq!(seconds(2440.0), "2.4 s");
        assert_eq!(seconds(12_600.0), "13 s");
        assert_eq!(thought_for(3000.0), "Thought for 3.0 s");
        assert_eq!(rate(10, 500.0), Some(20.0));
        assert_eq!(rate(10, 0.0), None);
        assert_eq!(rate(0, 100.0), None);
        assert_eq!(tokens_per_second(34.56), "34.6 tok/s");
        assert_eq!(tokens_per_second(456.7), "457 tok/s");
    }

    #[test]
    fn stats_line() {
        let s = Stats {
            prompt_tokens: 12,
            generated_tokens: 80,
            time_to_first_token_ms: 123.4,
            prefill_tokens_per_second: 456.7,
            decode_tokens_per_second: 34.5,
            thinking_ms: 0.0,
            stop_reason: "end_of_turn".into(),
        };
        assert_eq!(
            stats(&s),
            "first token 123 ms · prefill 457 tok/s · decode 34.5 tok/s · 12 prompt + 80 generated tokens"
        );
        let s = Stats {
            time_to_first_token_ms: 2500.0,
            stop_reason: "max_tokens".into(),
            ..s
        };
        assert!(stats(&s).starts_with("first token 2.5 s · "));
        assert!(stats(&s).ends_with(" · stopped at the token limit"));
        let s = Stats {
            stop_reason: "cancelled".into(),
            ..s
        };
        assert!(stats(&s).ends_with(" · stopped"));
        let s = Stats {
            stop_reason: "something_new".into(),
            ..s
        };
        assert!(stats(&s).ends_with(" · ended: something new"));
    }

    #[test]
    fn model_lines() {
        assert_eq!(parameters(134_515_008.0), "135 M");
        assert_eq!(parameters(1_543_714_304.0), "1.5 B");
        let info = ModelInfo {
            name: "SmolLM2-135M-Instruct".into(),
            architecture: "llama".into(),
            dtype: "q4_1".into(),
            device: "wasm".into(),
            parameters: 134_515_008.0,
            context_length: 8192,
            backend: "cpu (wasm simd128, 1 threads, int16 activations)".into(),
        };
        assert_eq!(
            model_info(&info),
            "SmolLM2-135M-Instruct · llama · q4_1 · wasm · 135 M parameters · context 8192"
        );
        let webnn = ModelInfo {
            device: "webnn-npu".into(),
            backend: "webnn (npu); 211 quantised matrices dequantised to fp16 at load".into(),
            context_length: 1024,
            ..info
        };
        assert!(model_info(&webnn).ends_with(
            "webnn-npu · 135 M parameters · context 1024 · 211 quantised matrices dequantised to \
             fp16 at load"
        ));
    }
}
