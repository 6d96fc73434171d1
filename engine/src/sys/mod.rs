//! Linux implementations of the seams.
