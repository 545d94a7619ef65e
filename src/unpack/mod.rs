//! Layer application (being written).
