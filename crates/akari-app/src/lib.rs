//! The akari chat app: a Leptos UI over akari's JavaScript API.
pub mod format;
pub mod markdown;
pub mod think;
pub mod types;
