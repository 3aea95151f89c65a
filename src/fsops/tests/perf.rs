//! Figures for the report, ignored by default:
//! `cargo test --release -- --ignored --nocapture perf_`.

use super::*;

/// Peak resident set size of this process so far.
fn rss_kib() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `cargo test --release -- --ignored --nocapture perf_`: figures for the report.
#[test]
#[ignore]
fn perf_copy_20k_files_200mb_vs_cp() {
    let s = tmp_in("/var/tmp");
    let a = s.path().join("a");
    build_bulk(&a, 200, 100, 10_000);
    let b = s.path().join("b");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap()
        .success());
    let st = tree_stats(&a).unwrap();
    println!("tree: {st:?}");
    let d = tmp_in("/dev/shm");
    for cold in [false, true] {
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&a)
            .arg(d.path().join("cp"))
            .status()
            .unwrap()
            .success());
        let t_cp = t.elapsed();
        assert!(Command::new("rm")
            .arg("-rf")
            .arg(&a)
            .status()
            .unwrap()
            .success());
        let t_cp_rm = t.elapsed();
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        copy_tree_verified(&b, &d.path().join("ours"), &opts(), &|_, _| {}).unwrap();
        let t_ours = t.elapsed();
        remove_tree(&b).unwrap();
        let t_ours_rm = t.elapsed();
        println!(
            "{}: cp -a {:.3}s, cp -a && rm -rf {:.3}s | copy_tree_verified {:.3}s, + remove_tree {:.3}s",
            if cold { "cold cache" } else { "warm cache" },
            t_cp.as_secs_f64(),
            t_cp_rm.as_secs_f64(),
            t_ours.as_secs_f64(),
            t_ours_rm.as_secs_f64()
        );
        // Next round: sources back from the copies.
        assert!(Command::new("cp")
            .arg("-a")
            .arg(d.path().join("cp"))
            .arg(&a)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("cp")
            .arg("-a")
            .arg(d.path().join("ours"))
            .arg(&b)
            .status()
            .unwrap()
            .success());
        remove_tree(&d.path().join("cp")).unwrap();
        remove_tree(&d.path().join("ours")).unwrap();
    }
}

#[test]
#[ignore]
fn perf_tree_stats_50k_and_manifest_memory_200k() {
    let s = tmp_in("/var/tmp");
    let r = s.path().join("r");
    build_bulk(&r, 500, 100, 1);
    let t = Instant::now();
    let st = tree_stats(&r).unwrap();
    println!(
        "tree_stats 50k files: {:.3}s {st:?}",
        t.elapsed().as_secs_f64()
    );
    drop_caches();
    let t = Instant::now();
    tree_stats(&r).unwrap();
    println!(
        "tree_stats 50k files, cold cache: {:.3}s",
        t.elapsed().as_secs_f64()
    );

    let r2 = s.path().join("r2");
    build_bulk(&r2, 2000, 100, 1);
    let before = rss_kib();
    let d = tmp_in("/dev/shm");
    let t = Instant::now();
    copy_tree_verified(&r2, &d.path().join("c"), &opts(), &|_, _| {}).unwrap();
    println!(
        "copy_tree_verified of 200k entries: {:.3}s, peak RSS +{} KiB",
        t.elapsed().as_secs_f64(),
        rss_kib().saturating_sub(before)
    );
    let before = rss_kib();
    let t = Instant::now();
    let m = manifest(&r2).unwrap();
    println!(
        "manifest of {} entries: {:.3}s, peak RSS +{} KiB",
        m.entries.len(),
        t.elapsed().as_secs_f64(),
        rss_kib().saturating_sub(before)
    );
    drop(m);
}
