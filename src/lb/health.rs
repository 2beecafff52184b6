//! The health thread (being written).
