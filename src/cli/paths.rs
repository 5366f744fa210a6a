//! Output paths checked before any work starts: no two outputs of one command may be the same file,
//! and no output may be one of the command's inputs (or a file inside an input folder), so that a
//! mistyped flag never replaces a checkpoint with a plot or a dataset with weights.

use std::path::{Component, Path, PathBuf};

use dp_runtime::{Error, Result};

/// A file a command will write, and the flag that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPath {
    /// The flag, without dashes (`save`, `plot`, `out`, ...).
    pub flag: &'static str,
    /// The path as given.
    pub path: PathBuf,
}

/// A file or folder a command reads, and the flag that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPath {
    /// The flag, without dashes (`data`, `init`, ...).
    pub flag: &'static str,
    /// The path as given.
    pub path: PathBuf,
}

/// Refuses (as an error on the later flag) two outputs that are the same file, and an output that is
/// an input or an existing file inside an input folder.
pub fn check_outputs(outputs: &[OutputPath], inputs: &[InputPath]) -> Result<()> {
    let resolved: Vec<PathBuf> = outputs.iter().map(|o| resolve(&o.path)).collect();
    for (i, output) in outputs.iter().enumerate() {
        if resolved[i].is_dir() {
            return Err(Error::invalid(output.flag, format!("{} is a directory", output.path.display())));
        }
        if let Some(j) = (0..i).find(|&j| resolved[j] == resolved[i]) {
            let other = &outputs[j];
            let message = if other.flag == output.flag {
                format!("{} is written twice", output.path.display())
            } else {
                format!(
                    "{} is also the file of --{}: one output would replace the other",
                    output.path.display(),
                    other.flag.replace('_', "-")
                )
            };
            return Err(Error::invalid(output.flag, message));
        }
        for input in inputs {
            let read = resolve(&input.path);
            let inside_folder = read.is_dir() && resolved[i].starts_with(&read) && resolved[i].is_file();
            if read == resolved[i] || inside_folder {
                return Err(Error::invalid(
                    output.flag,
                    format!(
                        "{} is {} --{} ({}): writing it would destroy an input",
                        output.path.display(),
                        if inside_folder { "a file inside" } else { "the input of" },
                        input.flag.replace('_', "-"),
                        input.path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The path with links and `..` resolved as far as it exists (a file not yet written is resolved
/// through its folder), so that two spellings of one file compare equal.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let absolute = std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(real_parent) => real_parent.join(name),
            Err(_) => normalise(&absolute),
        },
        _ => normalise(&absolute),
    }
}

/// `.` and `..` removed lexically (for paths whose folder does not exist yet).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(_) | Component::RootDir | Component::Prefix(_) => out.push(component),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(flag: &'static str, path: &Path) -> OutputPath {
        OutputPath { flag, path: path.to_path_buf() }
    }

    #[test]
    fn two_spellings_of_one_output_are_refused_on_the_later_flag() {
        let dir = std::env::temp_dir().join(format!("dp-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let a = dir.join("run.safetensors");
        let b = dir.join("sub/../run.safetensors");
        let err = check_outputs(&[out("save", &a), out("plot", &b)], &[]).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { name, message }
            if name == "plot" && message.contains("--save")),
            "{err}"
        );
        assert!(check_outputs(&[out("save", &a), out("plot", &dir.join("run.svg"))], &[]).is_ok());

        // An existing file inside an input folder, and the input itself.
        std::fs::write(dir.join("sub/train.csv"), b"x").unwrap();
        let data = InputPath { flag: "data", path: dir.join("sub") };
        let err = check_outputs(&[out("save", &dir.join("sub/train.csv"))], std::slice::from_ref(&data))
            .unwrap_err();
        assert!(err.to_string().contains("inside --data"), "{err}");
        assert!(check_outputs(&[out("save", &dir.join("sub/new.safetensors"))], &[data]).is_ok());
        let init = InputPath { flag: "init", path: a.clone() };
        std::fs::write(&a, b"w").unwrap();
        let err = check_outputs(&[out("out", &a)], &[init]).unwrap_err();
        assert!(err.to_string().contains("--init"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
