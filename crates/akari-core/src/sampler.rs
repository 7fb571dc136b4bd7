//! Token selection.
