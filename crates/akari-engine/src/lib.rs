//! akari-engine
