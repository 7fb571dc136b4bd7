//! Model file readers.
