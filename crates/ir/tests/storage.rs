//! `Storage`'s contract: zeroed when fresh, aligned to a cache line, and on
//! reuse keeping the bytes it held while zeroing those it never held.

use metal_mps_ir::Storage;

fn aligned(s: &Storage) -> bool {
    (s.as_bytes().as_ptr() as usize).is_multiple_of(64)
}

#[test]
fn fresh_storage_is_zeroed_and_line_aligned() {
    for len in [1, 7, 63, 64, 65, 4096, 1 << 20] {
        let s = Storage::zeroed(len).unwrap();
        assert_eq!(s.as_bytes().len(), len);
        assert!(
            s.as_bytes().iter().all(|&b| b == 0),
            "{len} bytes not zeroed"
        );
        assert!(aligned(&s), "{len} bytes at {:p}", s.as_bytes().as_ptr());
    }
}

#[test]
fn reuse_keeps_held_bytes_and_zeroes_new_ones() {
    let mut s = Storage::zeroed(100).unwrap();
    s.as_bytes_mut().fill(7);
    s.reset(10).unwrap();
    assert_eq!(s.as_bytes(), &[7; 10]);
    // Growing back within the largest length held: the old bytes are there.
    s.reset(100).unwrap();
    assert!(s.as_bytes().iter().all(|&b| b == 7));
    // Beyond it: zeros, and still aligned after the reallocation.
    s.reset(5000).unwrap();
    assert!(s.as_bytes()[..100].iter().all(|&b| b == 7));
    assert!(s.as_bytes()[100..].iter().all(|&b| b == 0));
    assert!(aligned(&s));
}

#[test]
fn clone_copies_the_live_bytes() {
    let mut s = Storage::zeroed(300).unwrap();
    s.as_bytes_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    s.reset(130).unwrap();
    let c = s.clone();
    assert_eq!(c.as_bytes(), s.as_bytes());
    assert!(aligned(&c));
}

#[test]
fn impossible_sizes_are_errors() {
    assert!(Storage::zeroed(usize::MAX / 2).is_err());
}
