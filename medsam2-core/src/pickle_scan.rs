//! A bounded pre-scan of a PyTorch `data.pkl` before candle's unpickler sees
//! it. Hand-written because no crate checks a pickle's cost without building
//! it: candle's reader clones memoised objects on every reference (a few
//! hundred bytes can expand exponentially) and allocates string lengths taken
//! from the file. The scan follows the stack with the *size* of each object
//! only, for the opcodes candle implements, and refuses a pickle whose
//! objects would exceed [`MAX_PICKLE_OBJECTS`] or whose lengths exceed the
//! bytes present.

use std::collections::HashMap;

use crate::limits::MAX_PICKLE_OBJECTS;

/// Checks `pkl`; the error is a one-line reason.
pub(crate) fn scan(pkl: &[u8]) -> Result<(), String> {
    const MARK: u64 = u64::MAX;
    let mut pos = 0usize;
    let mut stack: Vec<u64> = Vec::new();
    let mut memo: HashMap<u32, u64> = HashMap::new();
    let mut total: u64 = 0;
    let too_big =
        || format!("pickle expands beyond {MAX_PICKLE_OBJECTS} objects (MAX_PICKLE_OBJECTS)");
    macro_rules! take {
        ($n:expr) => {{
            let n: usize = $n;
            if pkl.len() - pos < n {
                return Err("truncated pickle".into());
            }
            let s = &pkl[pos..pos + n];
            pos += n;
            s
        }};
    }
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(MARK) | None => return Err("malformed pickle (stack underflow)".into()),
                Some(w) => w,
            }
        };
    }
    let pop_to_mark = |stack: &mut Vec<u64>| -> Result<u64, String> {
        let mut sum = 0u64;
        loop {
            match stack.pop() {
                None => return Err("malformed pickle (no mark)".into()),
                Some(MARK) => return Ok(sum),
                Some(w) => sum = sum.saturating_add(w),
            }
        }
    };
    let add_to_last = |stack: &mut Vec<u64>, w: u64| -> Result<(), String> {
        match stack.last_mut() {
            Some(l) if *l != MARK => {
                *l = l.saturating_add(w);
                Ok(())
            }
            _ => Err("malformed pickle (no container)".into()),
        }
    };
    loop {
        let op = take!(1)[0];
        let pushed: Option<u64> = match op {
            0x80 => {
                take!(1);
                None
            }
            b'c' => {
                for _ in 0..2 {
                    let nl = pkl[pos..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .ok_or("truncated pickle")?;
                    pos += nl + 1;
                }
                Some(1)
            }
            b'K' => {
                take!(1);
                Some(1)
            }
            b'M' => {
                take!(2);
                Some(1)
            }
            b'J' => {
                take!(4);
                Some(1)
            }
            b'G' => {
                take!(8);
                Some(1)
            }
            b'X' => {
                let l = take!(4);
                let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                take!(len);
                Some(1 + len as u64 / 16)
            }
            0x8a => {
                let n = take!(1)[0] as usize;
                if n > 8 {
                    return Err("unsupported long integer".into());
                }
                take!(n);
                Some(1)
            }
            b')' | b']' | b'}' | b'N' | 0x88 | 0x89 => Some(1),
            b'(' => {
                stack.push(MARK);
                None
            }
            b'Q' => {
                let w = pop!();
                Some(w + 1)
            }
            b't' | b'd' => Some(pop_to_mark(&mut stack)? + 1),
            0x85 => Some(pop!() + 1),
            0x86 => Some(pop!() + pop!() + 1),
            0x87 => Some(pop!() + pop!() + pop!() + 1),
            b'R' | 0x81 | b'b' => Some(pop!().saturating_add(pop!()) + 1),
            b'a' => {
                let w = pop!();
                add_to_last(&mut stack, w)?;
                None
            }
            b's' => {
                let w = pop!().saturating_add(pop!());
                add_to_last(&mut stack, w)?;
                None
            }
            b'e' | b'u' => {
                let w = pop_to_mark(&mut stack)?;
                add_to_last(&mut stack, w)?;
                None
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    take!(1)[0] as u32
                } else {
                    let b = take!(4);
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                let w = match stack.last() {
                    Some(&w) if w != MARK => w,
                    _ => return Err("malformed pickle (memo put)".into()),
                };
                total = total.saturating_add(w);
                memo.insert(id, w);
                None
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    take!(1)[0] as u32
                } else {
                    let b = take!(4);
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                let w = *memo.get(&id).ok_or("malformed pickle (memo get)")?;
                total = total.saturating_add(w);
                Some(w)
            }
            b'.' => return Ok(()),
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        };
        if let Some(w) = pushed {
            total = total.saturating_add(1);
            if w > MAX_PICKLE_OBJECTS {
                return Err(too_big());
            }
            stack.push(w);
        }
        if total > MAX_PICKLE_OBJECTS || stack.len() as u64 > MAX_PICKLE_OBJECTS {
            return Err(too_big());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scan;

    #[test]
    fn memo_bombs_and_lying_lengths_are_refused() {
        // [] put0 ; then 40 times: get0 get0 tuple2 put0 -> 2^40 objects.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        assert!(scan(&p).unwrap_err().contains("MAX_PICKLE_OBJECTS"));
        // A string claiming 4 GiB.
        assert!(scan(&[b'X', 0xff, 0xff, 0xff, 0xff, b'.']).is_err());
        // A small valid dict {"a": 1}.
        let ok = [b'}', b'X', 1, 0, 0, 0, b'a', b'K', 1, b's', b'.'];
        assert!(scan(&ok).is_ok());
    }
}
