//! Making the commands devnet prints work when pasted into a shell.

/// `PATH="<dir of this binary>:$PATH" ` when `cairn` on the PATH is not this binary (after
/// `cargo run` it is on no PATH at all), so that the commands devnet prints work as printed.
pub fn path_export() -> String {
    let Ok(me) = std::env::current_exe() else {
        return String::new();
    };
    let me = std::fs::canonicalize(&me).unwrap_or(me);
    let on_path = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .filter_map(|d| std::fs::canonicalize(d.join("cairn")).ok())
            .next()
            .is_some_and(|found| found == me)
    });
    match me.parent() {
        Some(dir) if !on_path => format!(
            "PATH={}:\"$PATH\" ",
            shell_quote(&dir.display().to_string())
        ),
        _ => String::new(),
    }
}

/// `s` as one shell word.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}
