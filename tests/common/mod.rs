//! Helpers shared by the integration tests: an in-process emulator on its own runtime,
//! plus blocking HTTP helpers that do not go through bsmount's client.
#![allow(dead_code)]

pub mod fuse;
pub mod hostile;

use bsmount::emulator::{self, Account, EmulatorOptions, NetProfile};
use serde_json::Value;

pub struct Emu {
    pub rt: tokio::runtime::Runtime,
    pub emu: Option<emulator::Emulator>,
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Emu {
    pub fn start(account: Account, opts: EmulatorOptions) -> Emu {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(emulator::start(account, opts)).unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Emu {
            base: emu.base_url.clone(),
            token: emu.token.clone(),
            emu: Some(emu),
            rt,
            http,
        }
    }

    pub fn demo() -> Emu {
        Self::start(emulator::demo::account(), EmulatorOptions::default())
    }

    pub fn with_net(account: Account, net: NetProfile) -> Emu {
        Self::start(
            account,
            EmulatorOptions {
                net,
                ..Default::default()
            },
        )
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}/{}", self.base, p.trim_start_matches('/'))
    }

    /// GET with the token; panics unless 200; returns JSON.
    pub fn get_json(&self, p: &str) -> Value {
        let (s, b) = self.get_raw(p, Some(&self.token));
        assert_eq!(s, 200, "GET {p}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    /// GET with an optional token in `x-access-token`: (status, body).
    pub fn get_raw(&self, p: &str, token: Option<&str>) -> (u16, String) {
        let mut r = self.http.get(self.url(p));
        if let Some(t) = token {
            r = r.header("x-access-token", t);
        }
        self.rt.block_on(async {
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }

    /// Any request built by `f`, answered as (status, headers, body bytes or error text).
    pub fn send(
        &self,
        f: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, Result<Vec<u8>, String>) {
        let req = f(&self.http);
        self.rt.block_on(async {
            let resp = req.send().await.unwrap();
            let (s, h) = (resp.status().as_u16(), resp.headers().clone());
            let b = resp.bytes().await.map(|b| b.to_vec()).map_err(|e| format!("{e:?}"));
            (s, h, b)
        })
    }

    pub fn stats(&self) -> Value {
        self.get_json("_emulator/stats")
    }

    pub fn manifest(&self) -> Vec<Value> {
        self.get_json("_emulator/manifest")["files"].as_array().unwrap().clone()
    }

    /// The presigned URL of a file id.
    pub fn presigned(&self, file_id: &str) -> String {
        self.get_json(&format!("v1pre3/files/{file_id}/content?redirect=meta"))["Response"]["HrefContent"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Whole content of a file, straight from the emulator.
    pub fn content(&self, file_id: &str) -> Vec<u8> {
        let u = self.presigned(file_id);
        let (s, _, b) = self.send(|c| c.get(u));
        assert_eq!(s, 200);
        b.unwrap()
    }
}
