//! Chat templates of real model families, checked against hand-written renders.

use super::*;

macro_rules! data {
    ($name:literal) => {
        include_str!(concat!("../../tests/data/templates/", $name))
    };
}

fn template(source: &str, bos: Option<&str>, eos: Option<&str>) -> ChatTemplate {
    let mut t = ChatTemplate::new(source, bos.map(String::from), eos.map(String::from)).unwrap();
    t.set_now(Some(NOW));
    t
}

/// 2026-11-26 12:00:00 UTC.
const NOW: i64 = 1_795_694_400;

fn user(s: &str) -> Message {
    Message::user(s)
}

#[test]
fn smollm2() {
    let t = template(data!("smollm2.jinja"), None, Some("<|im_end|>"));
    assert_eq!(
        t.render(&[user("Hi")], true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let msgs = [
        Message::system("Be brief."),
        user("Hi"),
        Message::assistant("Hello!"),
        user("Bye"),
    ];
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    );
}

#[test]
fn chatml_fallback() {
    let t = ChatTemplate::chatml();
    assert_eq!(
        t.render(&[Message::system("S"), user("Hi")], true).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(t.source().contains("<|im_start|>"));
}

#[test]
fn qwen2_5() {
    let t = template(data!("qwen2.5.jinja"), None, Some("<|im_end|>"));
    assert_eq!(
        t.render(&[user("Hi")], true).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let msgs = [
        Message::system("Be brief."),
        user("Hi"),
        Message::assistant("Hello!"),
        user("2+2?"),
    ];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Tool results are folded into a user turn.
    let msgs = [user("Weather?"), Message::new("tool", "sunny")];
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWeather?<|im_end|>\n\
         <|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    );
}

#[test]
fn deepseek_r1_distill_qwen() {
    let t = template(
        data!("deepseek-r1-distill-qwen.jinja"),
        Some("<｜begin▁of▁sentence｜>"),
        Some("<｜end▁of▁sentence｜>"),
    );
    let msgs = [
        Message::system("You are helpful."),
        user("Hi"),
        Message::assistant("<think>\nThe user greets me.\n</think>\n\nHello!"),
        user("2+2?"),
    ];
    let out = t.render(&msgs, true).unwrap();
    assert_eq!(
        out,
        "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi<｜Assistant｜>\n\nHello!<｜end▁of▁sentence｜>\
         <｜User｜>2+2?<｜Assistant｜><think>\n"
    );
    assert!(opens_reasoning(&out));
    let out = t.render(&[user("Hi")], false).unwrap();
    assert_eq!(out, "<｜begin▁of▁sentence｜><｜User｜>Hi");
    assert!(!opens_reasoning(&out));
}

#[test]
fn llama_3_2() {
    let t = template(
        data!("llama-3.2.jinja"),
        Some("<|begin_of_text|>"),
        Some("<|eot_id|>"),
    );
    let msgs = [Message::system("  You are terse. "), user("Hi")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Nov 2026\n\n\
         You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let out = t.render(&[user("Hi")], false).unwrap();
    assert_eq!(
        out,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Nov 2026\n\n<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    );
    // The system clock works too.
    let mut t = t;
    t.set_now(None);
    let out = t.render(&[user("Hi")], true).unwrap();
    assert!(out.contains("Today Date: "), "{out}");
    assert!(!out.contains("26 Jul 2024"));
}

#[test]
fn phi_3() {
    let t = template(data!("phi-3.5.jinja"), None, Some("<|endoftext|>"));
    assert_eq!(
        t.render(&[user("Hi")], true).unwrap(),
        "<|user|>\nHi<|end|>\n<|assistant|>\n"
    );
    let msgs = [
        Message::system("Be brief."),
        user("Hi"),
        Message::assistant("Hello!"),
    ];
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>"
    );
    // An empty system message is left out.
    assert_eq!(
        t.render(&[Message::system(""), user("Hi")], true).unwrap(),
        "<|user|>\nHi<|end|>\n<|assistant|>\n"
    );

    let t = template(data!("phi-3.jinja"), Some("<s>"), Some("<|endoftext|>"));
    assert_eq!(
        t.render(&[user("Hi"), Message::assistant("Hello!"), user("Bye")], true)
            .unwrap(),
        "<s><|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let t = template(data!("mistral-v0.1.jinja"), Some("<s>"), Some("</s>"));
    assert_eq!(
        t.render(
            &[user("Hi"), Message::assistant("Hello"), user("More")],
            true
        )
        .unwrap(),
        "<s>[INST] Hi [/INST]Hello</s>[INST] More [/INST]"
    );
    let err = t.render(&[user("Hi"), user("Hi again")], true).unwrap_err();
    assert!(matches!(err, Error::Template(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("Conversation roles must alternate user/assistant/user/assistant/..."),
        "{msg}"
    );
    let err = t.render(&[Message::system("S")], true).unwrap_err();
    assert!(err.to_string().contains("roles must alternate"), "{err}");
}

#[test]
fn syntax_errors() {
    for bad in [
        "{% for m in messages %}",
        "{{ messages[ }}",
        "{% if %}{% endif %}",
    ] {
        let err = ChatTemplate::new(bad, None, None).unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err}");
    }
}

#[test]
fn environment_matches_transformers() {
    // trim_blocks / lstrip_blocks.
    let t = template(
        "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n",
        None,
        None,
    );
    assert_eq!(
        t.render(&[user("a"), user("b")], false).unwrap(),
        "[a]\n[b]\n"
    );
    // Python string methods, namespace, loop controls.
    let t = template(
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\
         {% set ns.n = ns.n + 1 %}{{ m.content.strip().upper() }}|{{ m.content.split(',')[-1] }}|\
         {{ m.content.startswith(' a') }};{% endfor %}{{ ns.n }}",
        None,
        None,
    );
    assert_eq!(
        t.render(&[user(" a,b "), user("c"), user("d")], false)
            .unwrap(),
        "A,B|b |True;C|c|False;2"
    );
    // Globals: bos/eos, tools and documents none, add_generation_prompt.
    let t = template(
        "{{ bos_token }}{{ eos_token }}{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}{{ messages | length }}",
        Some("<s>"),
        Some("</s>"),
    );
    assert_eq!(
        t.render(&[user("x")], true).unwrap(),
        "<s></s>TrueTrueTrue1"
    );
    // Missing special tokens render as empty strings.
    let t = template("{{ bos_token + 'x' + eos_token }}", None, None);
    assert_eq!(t.render(&[], false).unwrap(), "x");
}

#[test]
fn tojson_like_python() {
    let t = template("{{ messages | tojson }}", None, None);
    assert_eq!(
        t.render(&[user("Hi <b> & \"q\" é\n")], false).unwrap(),
        r#"[{"role": "user", "content": "Hi <b> & \"q\" é\n"}]"#
    );
    let t = template("{{ messages | tojson(indent=2) }}", None, None);
    assert_eq!(
        t.render(&[user("Hi")], false).unwrap(),
        "[\n  {\n    \"role\": \"user\",\n    \"content\": \"Hi\"\n  }\n]"
    );
    let t = template("{{ messages[0] | tojson(4) }}", None, None);
    assert_eq!(
        t.render(&[user("Hi")], false).unwrap(),
        "{\n    \"role\": \"user\",\n    \"content\": \"Hi\"\n}"
    );
    let t = template(
        "{{ {'b': [1, 2.5, none, true, [], {}], 'a': 'x'} | tojson }}\n{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}\n{{ 'é' | tojson(ensure_ascii=true) }}",
        None,
        None,
    );
    assert_eq!(
        t.render(&[], false).unwrap(),
        "{\"b\": [1, 2.5, null, true, [], {}], \"a\": \"x\"}\n{\"a\": 2, \"b\": 1}\n\"\\u00e9\""
    );
}

#[test]
fn strftime_formats() {
    assert_eq!(strftime("%d %b %Y", NOW), "26 Nov 2026");
    assert_eq!(strftime("%Y-%m-%d %H:%M:%S", NOW), "2026-11-26 12:00:00");
    assert_eq!(
        strftime("%A %B %e %I %p %%", NOW),
        "Thursday November 26 12 PM %"
    );
    // 2024-02-29 23:59:58, a leap day.
    assert_eq!(
        strftime("%F %T %j %a %A %B %y", 1_709_251_198),
        "2024-02-29 23:59:58 060 Thu Thursday February 24"
    );
    assert_eq!(strftime("%F %a", -86_400), "1969-12-31 Wed");
    assert_eq!(strftime("%F", 0), "1970-01-01");
    assert_eq!(strftime("%Q %", 0), "%Q %");
}

#[test]
fn reasoning_detection() {
    assert!(opens_reasoning("<｜Assistant｜><think>\n"));
    assert!(opens_reasoning("x<think>"));
    assert!(!opens_reasoning("<think>x</think>"));
    assert!(!opens_reasoning("<|im_start|>assistant\n"));
}
