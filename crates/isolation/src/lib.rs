//! cgroup limits and uids for jailed VMMs (work in progress).
