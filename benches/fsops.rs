//! Micro-benchmarks of the hot pieces of `fsops`, so that regressions show:
//! the metadata walk (`tree_stats`), the manifest (scan + hash every byte), the verified copy
//! (to `/dev/shm` when it is another filesystem, as in a real cross-device move), the full
//! comparison of two trees (`verify_trees`), and raw blake3 throughput.
//!
//! `cargo bench --bench fsops` (about a minute). Trees come from `examples/gen_home.rs` (Claude's
//! size mix), generated once per process under `$TMPDIR` (default `/var/tmp`: a disk, not a
//! tmpfs). Whole-program comparisons against `cp -a`, `rm -rf` and `du -s` are in
//! `scripts/bench.sh`; figures in `docs/BENCHMARKS.md`.

#[path = "../examples/gen_home.rs"]
#[allow(dead_code)]
mod gen_home;

use disinto_claude_init::fsops::{self, CopyOptions};
use divan::Bencher;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn main() {
    divan::main();
    // Statics are never dropped: remove the generated tree here.
    if let Some(f) = FIXTURE.get() {
        let _ = std::fs::remove_dir_all(f.dir.path());
    }
}

/// Files in the benchmark tree: large enough to be dominated by per-file work, small enough
/// that every bench runs in seconds.
const FILES: usize = 2_000;

struct Fixture {
    dir: tempfile::TempDir,
    tree: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let base = std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into());
        let dir = tempfile::Builder::new()
            .prefix("dci-bench")
            .tempdir_in(base)
            .expect("temp dir");
        let tree = dir.path().join(".claude");
        // 2,000 files, 20 MB: the 20,000 files / 200 MB mix at a tenth of the scale.
        gen_home::generate(&tree, &gen_home::Spec::new(FILES, 5)).expect("generate");
        Fixture { dir, tree }
    })
}

/// Where copies go: `/dev/shm` when it is another filesystem than the tree (the cross-device
/// case the copy exists for), else next to the tree.
fn copy_base(tree: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    match fsops::same_filesystem(tree, shm) {
        Ok(false) => shm.to_path_buf(),
        _ => tree.parent().expect("parent").to_path_buf(),
    }
}

#[divan::bench(sample_count = 20)]
fn tree_stats(b: Bencher) {
    let f = fixture();
    b.bench(|| fsops::tree_stats(&f.tree).expect("tree_stats"));
}

#[divan::bench(sample_count = 10)]
fn manifest(b: Bencher) {
    let f = fixture();
    b.bench(|| fsops::manifest(&f.tree).expect("manifest"));
}

/// Our `par_for` (scoped threads) against rayon on the same `workers()` threads, for its three
/// users (copy, manifest, verify), in one process on one tree, one after the other:
/// `cargo bench --bench fsops --features bench-rayon -- par_for_vs_rayon` (docs/BENCHMARKS.md).
#[cfg(feature = "bench-rayon")]
#[divan::bench_group(sample_count = 10)]
mod par_for_vs_rayon {
    use super::*;
    use std::sync::atomic::Ordering;

    const POOLS: [&str; 2] = ["par_for", "rayon"];

    fn set(pool: &str) {
        fsops::PAR_FOR_ON_RAYON.store(pool == "rayon", Ordering::Relaxed);
    }

    #[divan::bench(args = POOLS)]
    fn manifest(b: Bencher, pool: &str) {
        let f = fixture();
        set(pool);
        b.bench(|| fsops::manifest(&f.tree).expect("manifest"));
        set("par_for");
    }

    #[divan::bench(args = POOLS)]
    fn copy_tree_verified(b: Bencher, pool: &str) {
        set(pool);
        super::copy_tree_verified(b);
        set("par_for");
    }

    #[divan::bench(args = POOLS)]
    fn verify_trees(b: Bencher, pool: &str) {
        set(pool);
        super::verify_trees(b);
        set("par_for");
    }
}

#[divan::bench(sample_count = 10)]
fn copy_tree_verified(b: Bencher) {
    let f = fixture();
    let opts = CopyOptions {
        preserve_owner: nix::unistd::geteuid().is_root(),
    };
    let base = tempfile::Builder::new()
        .prefix("dci-bench-copy")
        .tempdir_in(copy_base(&f.tree))
        .expect("temp dir");
    let mut n = 0u32;
    b.with_inputs(|| {
        n += 1;
        let dst = base.path().join(format!("c{n}"));
        fsops::remove_tree(&dst).expect("clean");
        dst
    })
    .bench_local_values(|dst| {
        fsops::copy_tree_verified(&f.tree, &dst, &opts, &|_, _| {}).expect("copy");
        dst
    });
}

#[divan::bench(sample_count = 10)]
fn verify_trees(b: Bencher) {
    let f = fixture();
    let base = tempfile::Builder::new()
        .prefix("dci-bench-verify")
        .tempdir_in(copy_base(&f.tree))
        .expect("temp dir");
    let copy = base.path().join("copy");
    let opts = CopyOptions {
        preserve_owner: nix::unistd::geteuid().is_root(),
    };
    fsops::copy_tree_verified(&f.tree, &copy, &opts, &|_, _| {}).expect("copy");
    b.bench(|| fsops::verify_trees(&f.tree, &copy, opts.preserve_owner).expect("verify"));
}

#[divan::bench(sample_count = 10)]
fn remove_tree(b: Bencher) {
    let f = fixture();
    let base = tempfile::Builder::new()
        .prefix("dci-bench-rm")
        .tempdir_in(f.tree.parent().expect("parent"))
        .expect("temp dir");
    let mut n = 0u32;
    b.with_inputs(|| {
        n += 1;
        let dst = base.path().join(format!("r{n}"));
        gen_home::generate(&dst, &gen_home::Spec::new(FILES, 5)).expect("generate");
        dst
    })
    .bench_local_values(|dst| fsops::remove_tree(&dst).expect("remove"));
}

/// blake3 over buffers of a small transcript, a copy buffer and a large transcript.
#[divan::bench(args = [4 << 10, 256 << 10, 8 << 20], sample_count = 20)]
fn blake3_hash(b: Bencher, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    b.counter(divan::counter::BytesCount::new(len))
        .bench(|| blake3::hash(divan::black_box(&data)));
}
