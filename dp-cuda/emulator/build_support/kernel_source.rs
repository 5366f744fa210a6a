//! Reading and rewriting kernel sources for build.rs (and for tests/kernel_source.rs, which includes
//! this file): comments set aside, and every `__shared__` declaration made to poison its variable.

use std::fmt::Write as _;

/// C source with every byte of its comments replaced by a space but their line breaks, string and
/// character literals kept: each line and each byte of it stays where it was.
pub fn without_comments(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                out.extend_from_slice(b"  ");
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    out.push(if bytes[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
                let closing = (bytes.len() - i).min(2);
                out.extend(std::iter::repeat_n(b' ', closing));
                i += closing;
            }
            quote @ (b'"' | b'\'') => {
                out.push(quote);
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        out.push(bytes[i]);
                        i += 1;
                    }
                    if i < bytes.len() {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                if i < bytes.len() {
                    out.push(quote);
                    i += 1;
                }
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("comments replaced whole, literals kept whole")
}

/// `source` with ` ::dp_emu::poison_shared(NAME);` inserted after the `;` of every line that declares
/// a `__shared__` variable NAME (cuda_on_cpu.hpp: it fills the variable with 0xff bytes when the first
/// thread of a block passes it), every line where it was. `Err` names the first line that declares a
/// `__shared__` variable in a way this cannot rewrite, and why: it must not escape the poisoning.
pub fn poison_shared_declarations(source: &str) -> Result<String, String> {
    let code = without_comments(source);
    let mut out = String::with_capacity(source.len() + 1024);
    for (number, (line, code_line)) in
        source.split_inclusive('\n').zip(code.split_inclusive('\n')).enumerate()
    {
        if word_count(code_line, "__shared__") == 0 {
            out.push_str(line);
            continue;
        }
        let (end, name) = shared_declaration(code_line)
            .map_err(|why| format!("line {}: {why}: `{}`", number + 1, line.trim()))?;
        out.push_str(&line[..end]);
        write!(out, " ::dp_emu::poison_shared({name});").expect("writing to a String");
        out.push_str(&line[end..]);
    }
    Ok(out)
}

/// For a line (comments blanked) declaring one `__shared__` variable alone, as
/// `[qualifiers] __shared__ TYPE NAME[N]...;`: the offset just past its `;`, and NAME.
fn shared_declaration(code_line: &str) -> Result<(usize, &str), &'static str> {
    let line = code_line.trim_end();
    if line.trim_start().starts_with('#') {
        return Err("__shared__ in a preprocessor line");
    }
    if word_count(line, "__shared__") != 1 {
        return Err("more than one __shared__ on the line");
    }
    if word_count(line, "extern") != 0 {
        return Err("extern __shared__ (dynamic shared memory), which the emulator does not model");
    }
    let Some(body) = line.strip_suffix(';') else {
        return Err("the declaration does not end with `;` on its line");
    };
    if body.contains(';') {
        return Err("more than one statement on the line");
    }
    if body.contains(['=', '{', '}']) {
        return Err("an initializer or a brace on the line");
    }
    let mut depth = 0i32;
    for c in body.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => return Err("more than one variable declared"),
            _ => {}
        }
    }
    let mut declarator = body.trim_end();
    while declarator.ends_with(']') {
        declarator = without_last_extent(declarator).ok_or("unbalanced brackets")?.trim_end();
    }
    let name_start =
        declarator.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |at| at + 1);
    let name = &declarator[name_start..];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) || name == "__shared__" {
        return Err("no variable name before the array extents and `;`");
    }
    let before = &declarator[..name_start];
    if !before.ends_with(|c: char| c.is_whitespace() || c == '*' || c == '&') {
        return Err("no variable name before the array extents and `;`");
    }
    let shared_at = before.find("__shared__").ok_or("__shared__ after the variable's name")?;
    if before[shared_at + "__shared__".len()..].trim().is_empty() {
        return Err("no type after __shared__");
    }
    Ok((line.len(), name))
}

/// `text` without its last `[...]`, which it ends with; `None` when the brackets do not balance.
fn without_last_extent(text: &str) -> Option<&str> {
    let mut depth = 0usize;
    for (at, c) in text.char_indices().rev() {
        match c {
            ']' => depth += 1,
            '[' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(&text[..at]);
                }
            }
            _ => {}
        }
    }
    None
}

/// How many times `word` stands in `text` as a whole identifier.
fn word_count(text: &str, word: &str) -> usize {
    let is_identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word)
        .filter(|&(at, _)| {
            !text[..at].ends_with(is_identifier) && !text[at + word.len()..].starts_with(is_identifier)
        })
        .count()
}
