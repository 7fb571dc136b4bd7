//! akari-cli
