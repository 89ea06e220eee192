//! Which script a request runs, or which file it gets: nginx's
//! `fastcgi_split_path_info ^(.+\.php)(/.+)$` and `try_files $uri $uri/ /index.php?$query_string`.
//!
//! Only a real `.php` file under the root is ever handed to the FastCGI server. The script
//! part ends at the first path segment ending in `.php`, and that exact file must exist:
//! `/uploads/x.jpg/y.php` never runs `x.jpg` (the `cgi.fix_pathinfo` trick), and a missing
//! `.php` is a 404 rather than a front-controller request. Files that are not scripts are
//! served as they are, except a `.php` file reached through a symlink with another name,
//! whose source must not leak.

use std::path::{Path, PathBuf};

use super::super::static_site::{self, Found};
use crate::config::FastCgiSite;

/// What a request path comes to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    Script(Script),
    /// A file that is not a script, sent as it is.
    File(PathBuf),
    /// A directory named without its trailing slash.
    AddSlash,
    /// A directory without an index script, and no front controller.
    Forbidden,
    Missing,
}

/// A script to run and how the CGI variables name it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Script {
    /// `SCRIPT_FILENAME`: canonical, under the root.
    pub filename: PathBuf,
    /// `SCRIPT_NAME` (and `DOCUMENT_URI`): the URL path of the script, decoded.
    pub name: String,
    /// `PATH_INFO`: what followed the script in the URL path, decoded; may be empty.
    pub path_info: String,
}

/// Resolves a normalised request path under `site.root` (canonical).
pub(super) async fn resolve(site: &FastCgiSite, path: &str) -> Target {
    let Some(segments) = static_site::url_segments(path) else {
        return Target::Missing;
    };
    if let Some(at) = segments.iter().position(|s| is_script(s)) {
        let name = format!("/{}", segments[..=at].join("/"));
        let mut path_info = String::new();
        for segment in &segments[at + 1..] {
            path_info.push('/');
            path_info.push_str(segment);
        }
        if !path_info.is_empty() && path.ends_with('/') {
            path_info.push('/');
        }
        return match script_file(&site.root, &name).await {
            Some(filename) => Target::Script(Script {
                filename,
                name,
                path_info,
            }),
            None => Target::Missing,
        };
    }
    match static_site::find(&site.root, path).await {
        Found::File(file) if is_script_file(&file) => Target::Missing,
        Found::File(file) => Target::File(file),
        Found::Directory(_) if !path.ends_with('/') => Target::AddSlash,
        Found::Directory(dir) => {
            let index = dir.join(&site.index);
            match static_site::find_in(&site.root, &index).await {
                Some(file) if is_script(&site.index) => Target::Script(Script {
                    filename: file,
                    name: format!("/{}", join_with_slash(&segments, &site.index)),
                    path_info: String::new(),
                }),
                Some(file) => Target::File(file),
                None => front_controller(site).await.unwrap_or(Target::Forbidden),
            }
        }
        Found::Missing => front_controller(site).await.unwrap_or(Target::Missing),
    }
}

/// The front controller's script, when one is configured and exists.
async fn front_controller(site: &FastCgiSite) -> Option<Target> {
    let name = site.front_controller.as_ref()?;
    let filename = script_file(&site.root, name).await?;
    Some(Target::Script(Script {
        filename,
        name: name.clone(),
        path_info: String::new(),
    }))
}

/// The canonical file of script URL path `name`, if it is a `.php` file under `root`.
async fn script_file(root: &Path, name: &str) -> Option<PathBuf> {
    let local = root.join(name.trim_start_matches('/'));
    static_site::find_in(root, &local)
        .await
        .filter(|file| is_script_file(file))
}

fn is_script(segment: &str) -> bool {
    segment.len() > ".php".len() && segment.ends_with(".php")
}

fn is_script_file(file: &Path) -> bool {
    file.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(is_script)
}

/// `a/b/index.php` from the segments `a`, `b` and `index.php`.
fn join_with_slash(segments: &[std::borrow::Cow<'_, str>], last: &str) -> String {
    let mut joined = String::new();
    for segment in segments {
        joined.push_str(segment);
        joined.push('/');
    }
    joined.push_str(last);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::config::FastCgiServer;

    fn site(root: &Path, front_controller: Option<&str>) -> FastCgiSite {
        FastCgiSite {
            server: FastCgiServer::Unix(root.join("none.sock")),
            root: std::fs::canonicalize(root).unwrap(),
            index: "index.php".into(),
            front_controller: front_controller.map(str::to_owned),
            timeout: Duration::from_secs(1),
        }
    }

    fn script(target: Target) -> (String, String) {
        match target {
            Target::Script(s) => (s.name, s.path_info),
            other => panic!("not a script: {other:?}"),
        }
    }

    #[tokio::test]
    async fn splits_at_the_first_real_script() {
        let dir = std::env::temp_dir().join(format!("headland-fcgi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("uploads/x.jpg")).unwrap();
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        std::fs::write(dir.join("index.php"), "<?php").unwrap();
        std::fs::write(dir.join("docs/index.php"), "<?php").unwrap();
        std::fs::write(dir.join("style.css"), "a{}").unwrap();
        std::fs::write(dir.join("uploads/evil.jpg"), "<?php").unwrap();
        std::os::unix::fs::symlink(dir.join("index.php"), dir.join("source.txt")).unwrap();
        let plain = site(&dir, None);
        let laravel = site(&dir, Some("/index.php"));

        let run = |t| script(t);
        assert_eq!(
            run(resolve(&plain, "/index.php/foo/bar").await),
            ("/index.php".into(), "/foo/bar".into())
        );
        assert_eq!(
            run(resolve(&plain, "/").await),
            ("/index.php".into(), String::new())
        );
        assert_eq!(
            run(resolve(&plain, "/docs/").await),
            ("/docs/index.php".into(), String::new())
        );
        assert_eq!(resolve(&plain, "/docs").await, Target::AddSlash);
        assert!(matches!(
            resolve(&plain, "/style.css").await,
            Target::File(_)
        ));
        assert_eq!(resolve(&plain, "/empty/").await, Target::Forbidden);
        assert_eq!(resolve(&plain, "/pretty/url").await, Target::Missing);
        assert_eq!(
            run(resolve(&laravel, "/pretty/url").await),
            ("/index.php".into(), String::new())
        );
        // Never a script that does not exist as a `.php` file, front controller or not.
        assert_eq!(resolve(&laravel, "/missing.php").await, Target::Missing);
        assert_eq!(
            resolve(&laravel, "/uploads/evil.jpg/x.php").await,
            Target::Missing
        );
        assert_eq!(resolve(&laravel, "/../index.php").await, Target::Missing);
        // A script's source is not served through a symlink with another name.
        assert_eq!(resolve(&plain, "/source.txt").await, Target::Missing);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
