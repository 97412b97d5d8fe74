//! Incremental CTG analysis (being written).
