//! Network namespaces for fcexec executions (work in progress).
