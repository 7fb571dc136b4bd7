//! akari-cpu
