//! Image sources (being written).
