//! The conversation: streaming replies, reasoning blocks, Send, Stop, Reset.
use leptos::prelude::*;
use leptos::task::spawn_local;
use web_sys::AbortController;

use super::{engine, State, Turn, CHAT_ABORT};
use crate::api::{self, ChatMessage, Engine};
use crate::error::AppError;
use crate::options::ChatSettings;
use crate::think::{Reply, Segment};
use crate::types::Chunk;
use crate::{format, markdown};

#[component]
pub(super) fn ChatPanel(s: State) -> impl IntoView {
    let ready = move || s.info.with(Option::is_some);
    let on_keydown = move |ev: web_sys::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send(s);
        }
    };
    view! {
        <section class="panel chat">
            <div id="log" class="log" role="log" aria-label="Conversation">
                <Show when=move || s.turns.with(Vec::is_empty)>
                    <p class="empty">
                        {move || {
                            if ready() {
                                "Ask something. Enter sends, Shift+Enter starts a new line."
                            } else {
                                "Load a model to start chatting."
                            }
                        }}
                    </p>
                </Show>
                <For each=move || s.turns.get() key=Turn::id children=move |turn| turn_view(turn)/>
            </div>
            <div class="composer">
                <label for="message" class="visually-hidden">"Message"</label>
                <textarea
                    id="message"
                    rows="3"
                    placeholder="Message (Enter sends, Shift+Enter for a new line)"
                    prop:value=move || s.draft.get()
                    on:input=move |ev| s.draft.set(event_target_value(&ev))
                    on:keydown=on_keydown
                ></textarea>
                <div class="buttons">
                    <button
                        class="primary"
                        on:click=move |_| send(s)
                        disabled=move || !ready() || s.generating.get()
                    >
                        "Send"
                    </button>
                    <button
                        class="secondary"
                        on:click=move |_| stop_chat(s)
                        disabled=move || !s.generating.get()
                    >
                        "Stop"
                    </button>
                    <button class="secondary" on:click=move |_| reset(s) disabled=move || !ready()>
                        "Reset"
                    </button>
                </div>
            </div>
        </section>
    }
}

fn turn_view(turn: Turn) -> AnyView {
    match turn {
        Turn::User { text, .. } => view! {
            <article class="turn user">
                <div class="bubble">{text}</div>
            </article>
        }
        .into_any(),
        Turn::Assistant {
            reply,
            rate,
            error,
            stopped,
            ..
        } => {
            // Segments are keyed by position and kind, so an open reasoning block stays open
            // while text streams into it.
            let keys = move || {
                reply.with(|r| {
                    r.segments
                        .iter()
                        .enumerate()
                        .map(|(i, seg)| (i, matches!(seg, Segment::Think { .. })))
                        .collect::<Vec<_>>()
                })
            };
            let stats = move || {
                reply.with(|r| {
                    if let Some(stats) = &r.stats {
                        Some(format::stats(stats))
                    } else if r.done {
                        stopped.get().then(|| "Stopped.".to_string())
                    } else {
                        rate.get().map(format::tokens_per_second)
                    }
                })
            };
            let waiting = move || reply.with(|r| !r.done && r.segments.is_empty());
            view! {
                <article class="turn assistant" aria-busy=move || (!reply.with(|r| r.done)).to_string()>
                    <Show when=waiting>
                        <p class="waiting">"…"</p>
                    </Show>
                    <For
                        each=keys
                        key=|k| *k
                        children=move |(i, think)| segment_view(reply, i, think)
                    />
                    {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                    <p class="stats">{stats}</p>
                </article>
            }
            .into_any()
        }
    }
}

fn segment_view(reply: RwSignal<Reply>, index: usize, think: bool) -> AnyView {
    let text = move || {
        reply.with(|r| match r.segments.get(index) {
            Some(Segment::Think { text, .. }) | Some(Segment::Answer { text }) => {
                markdown::render(text)
            }
            None => String::new(),
        })
    };
    if think {
        let title = move || {
            reply.with(|r| {
                let finished = matches!(
                    r.segments.get(index),
                    Some(Segment::Think {
                        duration_ms: Some(_),
                        ..
                    })
                );
                match (finished, r.thinking_so_far(index)) {
                    (true, Some(ms)) => format::thought_for(ms),
                    (false, Some(ms)) => format!("Thinking… {}", format::seconds(ms)),
                    _ => "Thinking…".to_string(),
                }
            })
        };
        view! {
            <details class="think">
                <summary>{title}</summary>
                <div class="md" inner_html=text></div>
            </details>
        }
        .into_any()
    } else {
        view! { <div class="md answer" inner_html=text></div> }.into_any()
    }
}

/// The conversation as the engine takes it: user turns and the answers, without reasoning.
fn history(turns: &[Turn]) -> Vec<ChatMessage> {
    turns
        .iter()
        .filter_map(|turn| match turn {
            Turn::User { text, .. } => Some(ChatMessage {
                role: "user",
                content: text.clone(),
            }),
            Turn::Assistant { reply, .. } => {
                let answer = reply.with_untracked(Reply::answer);
                (!answer.trim().is_empty()).then_some(ChatMessage {
                    role: "assistant",
                    content: answer,
                })
            }
        })
        .collect()
}

fn send(s: State) {
    if s.generating.get_untracked() {
        return;
    }
    let Some(engine) = engine() else { return };
    let text = s.draft.get_untracked().trim().to_string();
    if text.is_empty() {
        return;
    }
    s.draft.set(String::new());
    let reply = RwSignal::new(Reply::default());
    let rate = RwSignal::new(None);
    let error = RwSignal::new(None);
    let stopped = RwSignal::new(false);
    let user = Turn::User {
        id: s.new_id(),
        text,
    };
    let assistant = Turn::Assistant {
        id: s.new_id(),
        reply,
        rate,
        error,
        stopped,
    };
    s.turns.update(|t| t.push(user));
    let messages = s.turns.with_untracked(|t| history(t));
    let settings = ChatSettings::parse(
        &s.max_tokens.get_untracked(),
        &s.temperature.get_untracked(),
    );
    s.turns.update(|t| t.push(assistant));
    s.generating.set(true);
    scroll_log(true);
    spawn_local(async move {
        let result = stream_reply(&engine, &messages, &settings, reply, rate).await;
        let now = api::now_ms();
        reply.update(|r| {
            if !r.done {
                r.finish(now);
            }
        });
        match result {
            Ok(()) => {}
            Err(AppError::Aborted) => stopped.set(true),
            Err(e) => error.set(Some(e.to_string())),
        }
        if CHAT_ABORT.with(|c| c.borrow().as_ref().is_some_and(|c| c.signal().aborted())) {
            stopped.set(true);
        }
        CHAT_ABORT.with(|c| c.borrow_mut().take());
        s.generating.set(false);
        scroll_log(false);
    });
}

async fn stream_reply(
    engine: &Engine,
    messages: &[ChatMessage],
    settings: &ChatSettings,
    reply: RwSignal<Reply>,
    rate: RwSignal<Option<f64>>,
) -> Result<(), AppError> {
    let controller = AbortController::new().map_err(api::error_from_js)?;
    CHAT_ABORT.with(|c| *c.borrow_mut() = Some(controller.clone()));
    let stream = engine.start_chat(messages, settings, &controller.signal())?;
    while let Some(chunk) = stream.next().await? {
        let now = api::now_ms();
        let done = matches!(chunk, Chunk::Done { .. });
        reply.update(|r| r.push(chunk, now));
        rate.set(reply.with_untracked(|r| r.live_rate(now)));
        scroll_log(false);
        if done {
            stream.close();
            break;
        }
    }
    Ok(())
}

pub(super) fn stop_chat(s: State) {
    if !s.generating.get_untracked() {
        return;
    }
    if let Some(engine) = engine() {
        engine.stop();
    }
    CHAT_ABORT.with(|c| {
        if let Some(controller) = c.borrow().as_ref() {
            controller.abort();
        }
    });
}

fn reset(s: State) {
    stop_chat(s);
    s.turns.set(Vec::new());
    if let Some(engine) = engine() {
        spawn_local(async move {
            if let Err(e) = engine.clear().await {
                s.load_error.set(Some(e.to_string()));
            }
        });
    }
}

/// Keeps the newest text in view, unless the reader has scrolled up (or `force`).
fn scroll_log(force: bool) {
    let Some(log) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("log"))
    else {
        return;
    };
    let near_bottom = log.scroll_height() - log.scroll_top() - log.client_height() < 80;
    if force || near_bottom {
        log.set_scroll_top(log.scroll_height());
    }
}
