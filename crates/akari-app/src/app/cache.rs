//! The cache panel: cached models with their sizes, and deleting them.
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::State;
use crate::{api, format};

pub(super) fn refresh_cache(s: State) {
    spawn_local(async move {
        match api::list_cached().await {
            Ok(list) => {
                s.cache.set(list);
                s.cache_error.set(None);
            }
            Err(e) => s.cache_error.set(Some(e.to_string())),
        }
    });
}

#[component]
pub(super) fn CachePanel(s: State) -> impl IntoView {
    let delete = move |model: String| {
        spawn_local(async move {
            if let Err(e) = api::delete_cached(&model).await {
                s.cache_error.set(Some(e.to_string()));
            }
            refresh_cache(s);
        });
    };
    let total = move || s.cache.with(|c| c.iter().map(|m| m.bytes).sum::<f64>());
    view! {
        <section class="panel cache">
            <div class="cache-head">
                <h2>"Cache"</h2>
                <span class="numbers">{move || format::bytes(total())}</span>
                <button class="link" on:click=move |_| refresh_cache(s)>
                    "Refresh"
                </button>
            </div>
            <Show when=move || s.cache.with(Vec::is_empty)>
                <p class="hint">"Nothing cached yet: downloaded files are kept here for the next visit."</p>
            </Show>
            <ul class="cached">
                <For
                    each=move || s.cache.get()
                    key=|m| (m.model.clone(), m.bytes.to_bits(), m.files.len())
                    children=move |m| {
                        let model = m.model.clone();
                        let label = format!("Delete {}", m.model);
                        let files = m
                            .files
                            .iter()
                            .map(|f| format!("{} ({})", f.name, format::bytes(f.bytes)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        view! {
                            <li>
                                <span class="name" title=files>{m.model.clone()}</span>
                                <span class="numbers">
                                    {format!(
                                        "{} · {} file{}",
                                        format::bytes(m.bytes),
                                        m.files.len(),
                                        if m.files.len() == 1 { "" } else { "s" },
                                    )}
                                </span>
                                <button
                                    class="secondary small"
                                    aria-label=label
                                    on:click=move |_| delete(model.clone())
                                >
                                    "Delete"
                                </button>
                            </li>
                        }
                    }
                />
            </ul>
            {move || s.cache_error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </section>
    }
}
