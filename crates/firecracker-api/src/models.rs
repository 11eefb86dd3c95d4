//! Placeholder: typed models of Firecracker's API.
