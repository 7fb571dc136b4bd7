//! The akari chat app: a Leptos UI over akari's JavaScript API.
//!
//! The page imports the API module and this crate's wasm, then calls
//! `start(akari)`; the API is reached only through that object (see [`api`]).
pub mod api;
mod app;
pub mod error;
pub mod format;
pub mod markdown;
pub mod options;
pub mod think;
pub mod types;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Mounts the app; `akari` is the `akari.js` module namespace.
#[wasm_bindgen]
pub fn start(akari: JsValue) {
    // A panic stops the wasm module: say so on the page and in the console, with the message.
    std::panic::set_hook(Box::new(|info| {
        let message = format!("The app stopped on an internal error: {info}");
        web_sys::console::error_1(&JsValue::from_str(&message));
        if let Some(body) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.body())
        {
            let _ = body.insert_adjacent_text("afterbegin", &message);
        }
    }));
    api::set_module(akari.unchecked_into());
    leptos::mount::mount_to_body(app::App);
}
