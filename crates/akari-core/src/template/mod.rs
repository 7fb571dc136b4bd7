//! Chat templates: the Jinja templates Hugging Face models ship (`tokenizer.chat_template`),
//! rendered with minijinja the way `transformers`' `apply_chat_template` renders them.
//!
//! The environment matches `transformers`: `trim_blocks` and `lstrip_blocks` on, the trailing
//! newline kept, Python string/dict methods (`.split`, `.strip`, `.items`, ...) through
//! minijinja-contrib's pycompat, and the globals templates rely on: `raise_exception(msg)`,
//! `strftime_now(fmt)`, a Python-compatible `tojson` filter, `bos_token`, `eos_token`,
//! `messages`, `add_generation_prompt`, and `tools` / `documents` set to none.
//!
//! Nothing here touches the filesystem; the module builds for `wasm32` too.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};

use crate::error::{Error, Result};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Message::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new("assistant", content)
    }

    /// The message as templates see it: a map with `role` and `content`.
    fn to_value(&self) -> Value {
        Value::from_pairs([
            ("role", Value::from(self.role.as_str())),
            ("content", Value::from(self.content.as_str())),
        ])
    }
}

/// The name the compiled template is stored under in its environment.
const NAME: &str = "chat_template";

/// ChatML, for models that come without a template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Seconds since the Unix epoch that `strftime_now` reports; `None` is the clock.
    now: Option<i64>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn template_err(e: minijinja::Error) -> Error {
    let mut msg = match (e.kind(), e.detail()) {
        // `raise_exception`: the template's own message is what matters.
        (ErrorKind::InvalidOperation, Some(detail)) if e.name() == Some(NAME) => {
            let mut m = detail.to_string();
            if let Some(line) = e.line() {
                let _ = write!(m, " (line {line})");
            }
            m
        }
        _ => e.to_string(),
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(msg, ": {s}");
        source = s.source();
    }
    Error::Template(msg)
}

impl ChatTemplate {
    /// Compiles `source`; syntax errors come back as [`Error::Template`].
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true);
        env.set_syntax(
            syntax
                .build()
                .map_err(|e| Error::Template(format!("syntax configuration: {e}")))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(template_err)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token,
            eos_token,
            now: None,
        })
    }

    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), for models that come without a template.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML, None, None).expect("the ChatML template compiles")
    }

    /// Renders `messages`; with `add_generation_prompt` the prompt ends where the assistant's
    /// reply begins. Errors the template raises (`raise_exception`) carry its message.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template(NAME).map_err(template_err)?;
        // Without a clock (wasm) `strftime_now` stays undefined, so templates that check
        // `strftime_now is defined` (Llama 3) fall back to their fixed date.
        let strftime_now = match self.now.or_else(unix_now) {
            Some(secs) => Value::from_function(move |fmt: String| strftime(&fmt, secs)),
            None => Value::UNDEFINED,
        };
        let ctx = minijinja::context! {
            messages => messages.iter().map(Message::to_value).collect::<Vec<_>>(),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            tools => Value::from(()),
            documents => Value::from(()),
            strftime_now => strftime_now,
        };
        tmpl.render(ctx).map_err(template_err)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Fixes the time `strftime_now` reports (seconds since the Unix epoch, UTC); `None` uses
    /// the system clock. Useful for reproducible prompts and where there is no clock (wasm).
    pub fn set_now(&mut self, unix_secs: Option<i64>) {
        self.now = unix_secs;
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

/// Whether a rendered prompt ends inside an open reasoning block: it ends with `<think>` and
/// optional whitespace, as DeepSeek-R1 distill templates leave it.
pub fn opens_reasoning(rendered: &str) -> bool {
    rendered.trim_end().ends_with("<think>")
}

/// `raise_exception(msg)`: fails the render with the template's message.
fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// The current time in seconds since the Unix epoch, where the platform has a clock.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn unix_now() -> Option<i64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn unix_now() -> Option<i64> {
    None
}

/// The civil date (year, month 1-12, day 1-31) of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// C `strftime` for a UTC time, covering the directives chat templates use. Unknown
/// directives are copied as written.
fn strftime(fmt: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let month_name = MONTHS[month as usize - 1];
    let day_name = WEEKDAYS[weekday];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let _ = match d {
            'Y' => write!(out, "{year}"),
            'y' => write!(out, "{:02}", year.rem_euclid(100)),
            'C' => write!(out, "{:02}", year.div_euclid(100)),
            'm' => write!(out, "{month:02}"),
            'd' => write!(out, "{day:02}"),
            'e' => write!(out, "{day:>2}"),
            'j' => write!(out, "{yday:03}"),
            'b' | 'h' => write!(out, "{}", &month_name[..3]),
            'B' => write!(out, "{month_name}"),
            'a' => write!(out, "{}", &day_name[..3]),
            'A' => write!(out, "{day_name}"),
            'w' => write!(out, "{weekday}"),
            'u' => write!(out, "{}", if weekday == 0 { 7 } else { weekday }),
            'H' => write!(out, "{hour:02}"),
            'I' => write!(out, "{hour12:02}"),
            'M' => write!(out, "{minute:02}"),
            'S' => write!(out, "{second:02}"),
            'p' => write!(out, "{}", if hour < 12 { "AM" } else { "PM" }),
            'F' => write!(out, "{year}-{month:02}-{day:02}"),
            'D' => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
            'T' => write!(out, "{hour:02}:{minute:02}:{second:02}"),
            'R' => write!(out, "{hour:02}:{minute:02}"),
            'Z' => write!(out, "UTC"),
            'z' => write!(out, "+0000"),
            's' => write!(out, "{unix_secs}"),
            'n' => writeln!(out),
            't' => write!(out, "\t"),
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// `tojson` as `transformers` defines it: `json.dumps(value, ensure_ascii=False,
/// indent=indent, separators=separators, sort_keys=sort_keys)`, so no HTML escaping and
/// Python's spacing (`{"a": 1, "b": [1, 2]}`).
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else {
                let n = i64::try_from(v.clone()).map_err(|_| {
                    minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("tojson: indent must be an integer or a string, not {v}"),
                    )
                })?;
                Some(" ".repeat(n.max(0) as usize))
            }
        }
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let separators = kwargs.get::<Option<Vec<String>>>("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        indent,
        item_sep,
        key_sep,
        sort_keys,
        ensure_ascii,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    ensure_ascii: bool,
}

fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    if !ensure_ascii {
        out.push_str(&quoted);
        return;
    }
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
}

fn newline(out: &mut String, opts: &JsonOpts, level: usize) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_json(
    out: &mut String,
    v: &Value,
    opts: &JsonOpts,
    level: usize,
) -> Result<(), minijinja::Error> {
    if level > 256 {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                let _ = write!(out, "{i}");
            } else if let Ok(f) = f64::try_from(v.clone()) {
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    out.push_str(&serde_json::to_string(&f).unwrap_or_else(|_| v.to_string()));
                }
            } else {
                out.push_str(&v.to_string());
            }
        }
        ValueKind::String => json_string(out, v.as_str().unwrap_or_default(), opts.ensure_ascii),
        ValueKind::Bytes => json_string(
            out,
            &String::from_utf8_lossy(v.as_bytes().unwrap_or_default()),
            opts.ensure_ascii,
        ),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(out, opts, level + 1);
                match k.as_str() {
                    Some(s) => json_string(out, s, opts.ensure_ascii),
                    None => json_string(out, &k.to_string(), opts.ensure_ascii),
                }
                out.push_str(&opts.key_sep);
                write_json(out, &v.get_item(k)?, opts, level + 1)?;
            }
            newline(out, opts, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(out, opts, level + 1);
                write_json(out, item, opts, level + 1)?;
            }
            newline(out, opts, level);
            out.push(']');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize {}", v.kind()),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
