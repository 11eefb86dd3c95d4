//! The image cache: a second build is served from the cache, concurrent
//! builds of one source build once, least recently used images are
//! evicted over the limit (never one in use), removal, and sources that
//! cannot be cached.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use fcexec_images::{BuildOptions, Cache, CacheError, Headroom, Progress, Source};

/// Options counting builds (one `Resolved` per build) in `count`.
fn counting(count: &Arc<AtomicUsize>) -> BuildOptions {
    let count = count.clone();
    BuildOptions {
        headroom: Headroom {
            fraction: 0.0,
            bytes: 1 << 20,
        },
        progress: Some(Arc::new(move |p: &Progress| {
            if matches!(p, Progress::Resolved { .. }) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        })),
        ..BuildOptions::default()
    }
}

/// An OCI layout at `dir` with one file whose content is `tag`.
fn image(dir: &Path, tag: &str) -> Source {
    let l = layer(|b| {
        dir_entry(b);
        file(b, "etc/tag", 0o644, (0, 0), tag.as_bytes());
    });
    oci_layout(dir, &[l], "amd64");
    Source::detect(dir).unwrap()
}

fn dir_entry(b: &mut tar::Builder<Vec<u8>>) {
    dir(b, "etc", 0o755);
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn a_second_build_is_served_from_the_cache() {
    if !root_or_skip("a_second_build_is_served_from_the_cache") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let source = image(&tmp.path().join("oci"), "one");
    let cache = Cache::open(&tmp.path().join("cache"), None).unwrap();
    let builds = Arc::new(AtomicUsize::new(0));
    let first = cache.get_or_build(&source, &counting(&builds)).unwrap();
    assert!(first.built);
    assert_eq!(first.config.entrypoint, ["/bin/entry"]);
    assert_eq!(cat(&first.path, "/etc/tag"), b"one");
    let second = cache.get_or_build(&source, &counting(&builds)).unwrap();
    assert!(!second.built);
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(
        (second.key.as_str(), second.size),
        (first.key.as_str(), first.size)
    );
    assert_eq!(second.path, first.path);
    assert_eq!(second.config, first.config);
    let list = cache.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].key, first.key);
    assert_eq!(list[0].source, tmp.path().join("oci").display().to_string());
    assert_eq!(list[0].size, std::fs::metadata(&first.path).unwrap().len());
    assert!(list[0].last_used_ms >= list[0].built_ms);

    // The same image in a docker archive is another key, cached as well.
    let archive = tmp.path().join("image.tar");
    docker_archive(&archive, &[layer(dir_entry)]);
    let docker = Source::detect(&archive).unwrap();
    let d1 = cache.get_or_build(&docker, &counting(&builds)).unwrap();
    let d2 = cache.get_or_build(&docker, &counting(&builds)).unwrap();
    assert!(d1.built && !d2.built);
    assert_ne!(d1.key, first.key);
    assert_eq!(builds.load(Ordering::SeqCst), 2);
}

#[test]
fn concurrent_builds_of_one_source_build_once() {
    if !root_or_skip("concurrent_builds_of_one_source_build_once") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let source = image(&tmp.path().join("oci"), "shared");
    let cache = Cache::open(&tmp.path().join("cache"), None).unwrap();
    let builds = Arc::new(AtomicUsize::new(0));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cache.get_or_build(&source, &counting(&builds)).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(results.iter().filter(|r| r.built).count(), 1);
    assert!(results.iter().all(|r| r.key == results[0].key));
}

#[test]
fn least_recently_used_images_are_evicted_over_the_limit() {
    if !root_or_skip("least_recently_used_images_are_evicted_over_the_limit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let builds = Arc::new(AtomicUsize::new(0));
    let opts = counting(&builds);
    let sources: Vec<Source> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| image(&tmp.path().join(t), t))
        .collect();
    let unlimited = Cache::open(&dir, None).unwrap();
    let a = unlimited.get_or_build(&sources[0], &opts).unwrap();
    let (a_key, a_size) = (a.key.clone(), a.size);
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let b = unlimited.get_or_build(&sources[1], &opts).unwrap();
    let (b_key, b_size) = (b.key.clone(), b.size);
    drop(b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    // A is used again: B is now the least recently used.
    drop(unlimited.get_or_build(&sources[0], &opts).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(5));

    // Room for two images: adding C evicts B.
    let cache = Cache::open(&dir, Some(a_size + b_size + a_size / 2)).unwrap();
    let c = cache.get_or_build(&sources[2], &opts).unwrap();
    let keys: Vec<String> = cache.list().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, [a_key.clone(), c.key.clone()]);
    assert!(!dir.join(format!("{b_key}.ext4")).exists());
    std::thread::sleep(std::time::Duration::from_millis(5));

    // A in use is not evicted even though least recently used: C goes.
    let held = cache.get_or_build(&sources[0], &opts).unwrap();
    assert!(!held.built);
    let c_key = c.key.clone();
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let d = cache.get_or_build(&sources[3], &opts).unwrap();
    let mut keys: Vec<String> = cache.list().unwrap().into_iter().map(|e| e.key).collect();
    keys.sort();
    let mut want = vec![a_key.clone(), d.key.clone()];
    want.sort();
    assert_eq!(keys, want, "C ({c_key}) is evicted, A is in use");
    assert_eq!(builds.load(Ordering::SeqCst), 4);
}

#[test]
fn remove_by_key_prefix_or_source_and_not_while_in_use() {
    if !root_or_skip("remove_by_key_prefix_or_source_and_not_while_in_use") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let source = image(&tmp.path().join("oci"), "rm");
    let dir = tmp.path().join("cache");
    let cache = Cache::open(&dir, None).unwrap();
    let builds = Arc::new(AtomicUsize::new(0));
    let held = cache.get_or_build(&source, &counting(&builds)).unwrap();
    let key = held.key.clone();
    let err = cache.remove(&key[..12]).unwrap_err();
    assert!(matches!(err, CacheError::InUse(_)), "{err}");
    assert!(held.path.is_file());
    drop(held);
    let removed = cache.remove(&key[..12]).unwrap();
    assert_eq!(removed.key, key);
    assert!(cache.list().unwrap().is_empty());
    assert!(!names(&dir)
        .iter()
        .any(|n| n.ends_with(".ext4") || n.ends_with(".json")));
    let err = cache.remove(&key).unwrap_err();
    assert!(matches!(err, CacheError::NotFound(_)), "{err}");

    // By source name, and it builds anew afterwards.
    drop(cache.get_or_build(&source, &counting(&builds)).unwrap());
    let name = tmp.path().join("oci").display().to_string();
    assert_eq!(cache.remove(&name).unwrap().key, key);
    assert!(
        cache
            .get_or_build(&source, &counting(&builds))
            .unwrap()
            .built
    );
    assert_eq!(builds.load(Ordering::SeqCst), 3);
}

#[test]
fn directories_are_not_cached_and_failed_builds_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let cache = Cache::open(&dir, None).unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let err = cache
        .get_or_build(&Source::Directory(tree), &BuildOptions::default())
        .unwrap_err();
    assert!(matches!(err, CacheError::Uncacheable(_)), "{err}");
    assert!(err.to_string().contains("cannot be cached"), "{err}");

    // An OCI layout whose layer blob is missing.
    let oci = tmp.path().join("broken");
    let source = image(&oci, "broken");
    for e in std::fs::read_dir(oci.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        if std::fs::read(&p).unwrap()[..2] == [0x1f, 0x8b] {
            std::fs::remove_file(p).unwrap();
        }
    }
    let err = cache
        .get_or_build(&source, &BuildOptions::default())
        .unwrap_err();
    assert!(matches!(err, CacheError::Build(_)), "{err}");
    assert!(
        names(&dir).iter().all(|n| n.ends_with(".lock")),
        "{:?}",
        names(&dir)
    );
    assert!(cache.list().unwrap().is_empty());
}
