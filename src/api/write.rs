//! The calls that change BaseSpace, as values: each function here builds one [`Call`]
//! (method, path, body) the way BaseSpace documents it, and [`super::BaseSpaceApi::send`]
//! makes it. Building apart from sending keeps the trait at one method for every write, and
//! lets the write path be tested against any implementation.

use bytes::Bytes;
use serde_json::json;

use super::segment;

/// The HTTP methods writes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Post,
    Put,
    Delete,
}

/// One request that changes something.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: Verb,
    /// Path and query, relative to the API server.
    pub path: String,
    pub body: Bytes,
    /// The body is JSON (else raw bytes, `application/octet-stream`).
    pub json: bool,
    /// Send `Content-MD5` of the body (uploads: BaseSpace checks it).
    pub md5: bool,
}

impl Call {
    fn new(verb: Verb, path: String) -> Call {
        Call {
            verb,
            path,
            body: Bytes::new(),
            json: false,
            md5: false,
        }
    }

    fn json(mut self, v: serde_json::Value) -> Call {
        self.body = Bytes::from(v.to_string());
        self.json = true;
        self
    }

    fn bytes(mut self, b: Bytes) -> Call {
        self.body = b;
        self.md5 = true;
        self
    }
}

fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `POST v1pre3/projects`: BaseSpace answers with the project of that name if there is one.
pub fn create_project(name: &str) -> Call {
    Call::new(Verb::Post, "v1pre3/projects".into()).json(json!({ "Name": name }))
}

/// `POST v1pre3/projects/{id}/appresults`: the appresult and a new appsession making it.
pub fn create_appresult(project: &str, name: &str) -> Call {
    Call::new(Verb::Post, format!("v1pre3/projects/{}/appresults", segment(project)))
        .json(json!({ "Name": name, "Description": "" }))
}

fn files_of(appresult: &str, directory: &str, name: &str) -> String {
    format!(
        "v1pre3/appresults/{}/files?name={}&directory={}",
        segment(appresult),
        q(name),
        q(directory)
    )
}

/// A whole file in one request.
pub fn upload_whole(appresult: &str, directory: &str, name: &str, body: Bytes) -> Call {
    Call::new(Verb::Post, files_of(appresult, directory, name)).bytes(body)
}

/// Starts a multipart upload; the answer is the (pending) file.
pub fn start_upload(appresult: &str, directory: &str, name: &str) -> Call {
    Call::new(
        Verb::Post,
        format!("{}&multipart=true", files_of(appresult, directory, name)),
    )
}

/// `PUT v1pre3/files/{id}/parts/{n}`, numbered from 1, with `Content-MD5`.
pub fn upload_part(file: &str, n: u32, body: Bytes) -> Call {
    Call::new(Verb::Put, format!("v1pre3/files/{}/parts/{n}", segment(file))).bytes(body)
}

/// `POST v1pre3/files/{id}?uploadstatus=complete`: the parts become the file.
pub fn complete_upload(file: &str) -> Call {
    Call::new(
        Verb::Post,
        format!("v1pre3/files/{}?uploadstatus=complete", segment(file)),
    )
}

/// `POST v1pre3/appsessions/{id}` with a status (`Complete` finishes its appresults).
pub fn set_appsession_status(session: &str, status: &str, summary: &str) -> Call {
    Call::new(Verb::Post, format!("v1pre3/appsessions/{}", segment(session)))
        .json(json!({ "Status": status, "StatusSummary": summary }))
}

/// Moves a project, run or dataset (`projects`, `runs`, `datasets`) to the trash.
pub fn move_to_trash(resource: &str, id: &str) -> Call {
    Call::new(Verb::Delete, format!("v2/{resource}/{}", segment(id)))
}

/// Brings a trash item back.
pub fn restore_from_trash(id: &str) -> Call {
    Call::new(Verb::Post, format!("v2/trash/{}/restorefromtrash", segment(id)))
}
