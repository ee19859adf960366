//! The tokens of a Python module in the plain subset [`super::grammar`] reads: one pass over
//! the bytes, one vector for the whole file. Anything outside the subset (tabs or carriage
//! returns, a backslash continuation, bytes literals, escapes beyond the common ones, f-string
//! fields beyond a dotted name, numbers other than plain decimals, non-ASCII names) answers
//! `None`: the caller then asks the full parser, which also judges every error.

/// What a token is; operators and keywords are told apart by their text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Name,
    Number,
    Str,
    Op,
    Newline,
    Indent,
    Dedent,
    End,
}

#[derive(Clone, Copy, Debug)]
pub struct Token {
    pub kind: Kind,
    pub start: u32,
    pub end: u32,
}

const OPS3: [&str; 5] = ["**=", "//=", ">>=", "<<=", "..."];
const OPS2: [&str; 19] =
    ["->", "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@=", ":="];
const OPS1: &[u8] = b"()[]{},:;.+-*/%&|^~<>=@";

/// Python's keywords (soft keywords excepted: they are names).
pub fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "False"
            | "None"
            | "True"
            | "and"
            | "as"
            | "assert"
            | "async"
            | "await"
            | "break"
            | "class"
            | "continue"
            | "def"
            | "del"
            | "elif"
            | "else"
            | "except"
            | "finally"
            | "for"
            | "from"
            | "global"
            | "if"
            | "import"
            | "in"
            | "is"
            | "lambda"
            | "nonlocal"
            | "not"
            | "or"
            | "pass"
            | "raise"
            | "return"
            | "try"
            | "while"
            | "with"
            | "yield"
    )
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The end of the name that starts at `at`.
fn name_end(b: &[u8], at: usize) -> usize {
    at + b[at..].iter().take_while(|c| is_name_byte(**c)).count()
}

/// The end of a plain decimal number (`0`, `12`, `1.5`) at `at`, or `None`.
fn number_end(b: &[u8], at: usize) -> Option<usize> {
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut end = digits(at);
    if b[at] == b'0' && end - at > 1 {
        return None;
    }
    if b.get(end) == Some(&b'.') {
        let fraction = digits(end + 1);
        if fraction == end + 1 {
            return None;
        }
        end = fraction;
    }
    match b.get(end) {
        Some(c) if is_name_byte(*c) || *c == b'.' => None,
        _ => Some(end),
    }
}

/// The end of an f-string replacement field whose `{` is at `at`: a dotted name with
/// subscripts of a number or a name and empty calls, an optional `!r`/`!s`/`!a` and a plain
/// format spec.
fn field_end(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    if !is_name_start(*b.get(i)?) {
        return None;
    }
    let end = name_end(b, i);
    let first = std::str::from_utf8(&b[i..end]).ok()?;
    if is_keyword(first) && !matches!(first, "True" | "False" | "None") {
        return None;
    }
    i = end;
    loop {
        match b.get(i)? {
            b'.' if is_name_start(*b.get(i + 1)?) => {
                let end = name_end(b, i + 1);
                if is_keyword(std::str::from_utf8(&b[i + 1..end]).ok()?) {
                    return None;
                }
                i = end;
            }
            b'[' => {
                let inner = i + 1;
                let end = match b.get(inner)? {
                    c if c.is_ascii_digit() => number_end(b, inner)?,
                    c if is_name_start(*c) => name_end(b, inner),
                    _ => return None,
                };
                if is_keyword(std::str::from_utf8(&b[inner..end]).ok()?) || b.get(end)? != &b']' {
                    return None;
                }
                i = end + 1;
            }
            b'(' if b.get(i + 1)? == &b')' => i += 2,
            _ => break,
        }
    }
    if b[i] == b'!' {
        if !matches!(b.get(i + 1)?, b'r' | b's' | b'a') {
            return None;
        }
        i += 2;
    }
    if b.get(i)? == &b':' {
        i += 1;
        while b.get(i)?.is_ascii_alphanumeric() || b" .<>^+-,_%#".contains(&b[i]) {
            i += 1;
        }
    }
    (b.get(i)? == &b'}').then_some(i + 1)
}

/// The end of the string literal whose opening quote is at `at`.
fn string_end(b: &[u8], at: usize, raw: bool, format: bool) -> Option<usize> {
    let quote = b[at];
    let triple = b.get(at + 1) == Some(&quote) && b.get(at + 2) == Some(&quote);
    let mut i = at + if triple { 3 } else { 1 };
    loop {
        match *b.get(i)? {
            b'\\' if raw => {
                if !triple && matches!(b.get(i + 1)?, b'\n') {
                    return None;
                }
                i += 2;
            }
            b'\\' => {
                match b.get(i + 1)? {
                    b'\\' | b'\'' | b'"' | b'n' | b't' | b'r' | b'a' | b'b' | b'f' | b'v' => {}
                    b'0' if !b.get(i + 2)?.is_ascii_digit() => {}
                    _ => return None,
                }
                i += 2;
            }
            b'\n' if !triple => return None,
            b'{' if format => i = if b.get(i + 1) == Some(&b'{') { i + 2 } else { field_end(b, i)? },
            b'}' if format => {
                if b.get(i + 1) != Some(&b'}') {
                    return None;
                }
                i += 2;
            }
            c if c == quote => {
                if !triple {
                    return Some(i + 1);
                }
                if b.get(i + 1) == Some(&quote) && b.get(i + 2) == Some(&quote) {
                    return Some(i + 3);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// The operator at `at`, by its length.
fn op_len(b: &[u8], at: usize) -> Option<usize> {
    let rest = &b[at..];
    let starts = |op: &&str| rest.starts_with(op.as_bytes());
    if OPS3.iter().any(starts) {
        Some(3)
    } else if OPS2.iter().any(starts) {
        Some(2)
    } else {
        OPS1.contains(&rest[0]).then_some(1)
    }
}

/// The tokens of `source`, or `None` when it leaves the subset (or is not Python).
pub fn tokens(source: &str) -> Option<Vec<Token>> {
    let b = source.as_bytes();
    u32::try_from(b.len()).ok()?;
    let mut out: Vec<Token> = Vec::with_capacity(b.len() / 4);
    let push = |out: &mut Vec<Token>, kind, start: usize, end: usize| {
        out.push(Token { kind, start: start as u32, end: end as u32 })
    };
    let mut indents: Vec<usize> = vec![0];
    let (mut depth, mut i, mut line_start) = (0usize, 0usize, true);
    while i < b.len() {
        if line_start {
            let first = i + b[i..].iter().take_while(|c| **c == b' ').count();
            match b.get(first) {
                None => {
                    i = first;
                    break;
                }
                Some(b'\n') => {
                    i = first + 1;
                    continue;
                }
                Some(b'#') => {
                    i = first + b[first..].iter().take_while(|c| **c != b'\n').count();
                    continue;
                }
                _ => {}
            }
            let column = first - i;
            let top = *indents.last()?;
            if column > top {
                indents.push(column);
                push(&mut out, Kind::Indent, first, first);
            } else {
                while column < *indents.last()? {
                    indents.pop();
                    push(&mut out, Kind::Dedent, first, first);
                }
                if column != *indents.last()? {
                    return None;
                }
            }
            (i, line_start) = (first, false);
        }
        let c = b[i];
        match c {
            b' ' => i += 1,
            b'\n' => {
                if depth == 0 {
                    push(&mut out, Kind::Newline, i, i + 1);
                    line_start = true;
                }
                i += 1;
            }
            b'#' => i += b[i..].iter().take_while(|c| **c != b'\n').count(),
            b'"' | b'\'' => {
                let end = string_end(b, i, false, false)?;
                push(&mut out, Kind::Str, i, end);
                i = end;
            }
            c if is_name_start(c) => {
                let end = name_end(b, i);
                if matches!(b.get(end), Some(b'"' | b'\'')) {
                    let (raw, format) = match &b[i..end] {
                        b"r" | b"R" => (true, false),
                        b"f" | b"F" => (false, true),
                        b"u" | b"U" => (false, false),
                        _ => return None,
                    };
                    let close = string_end(b, end, raw, format)?;
                    push(&mut out, Kind::Str, i, close);
                    i = close;
                } else {
                    push(&mut out, Kind::Name, i, end);
                    i = end;
                }
            }
            c if c.is_ascii_digit() => {
                let end = number_end(b, i)?;
                push(&mut out, Kind::Number, i, end);
                i = end;
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => return None,
            _ => {
                let len = op_len(b, i)?;
                match c {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' => depth = depth.checked_sub(1)?,
                    _ => {}
                }
                push(&mut out, Kind::Op, i, i + len);
                i += len;
            }
        }
    }
    if depth > 0 {
        return None;
    }
    if out.last().is_some_and(|t| !matches!(t.kind, Kind::Newline | Kind::Dedent)) {
        push(&mut out, Kind::Newline, i, i);
    }
    while indents.len() > 1 {
        indents.pop();
        push(&mut out, Kind::Dedent, i, i);
    }
    push(&mut out, Kind::End, i, i);
    Some(out)
}
