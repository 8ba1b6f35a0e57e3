//! Test helpers shared by the JWT/OIDC and Kubernetes method tests: keys,
//! signing, a storage fixture, and a tiny HTTP server standing in for a
//! JWKS endpoint, an OIDC issuer or a Kubernetes API server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::auth::Authorized;
use crate::auth::lockout::{Lockout, LockoutConfig};
use crate::auth::methods::MethodContext;
use crate::barrier::view::View;
use crate::barrier::{Barrier, KEYRING_PATH, Keyring, now_unix};
use crate::logical::{Backend, LogicalError, Login, Operation, Request, Response};
use crate::storage::{Storage, WriteBatch};

// Test keys (generated with openssl for these tests only).
pub(crate) const ED_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIApn+EFIv0x1R1DgXLozP8qqa3JXwVF2bmvekNziVKwT
-----END PRIVATE KEY-----
";
pub(crate) const ED_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAh4hwF3s+jt/mQLyc4KGXuaR8uY/lwq3JyCuEEr4akBU=
-----END PUBLIC KEY-----
";
pub(crate) const ED2_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIvH8OrUOXGjIL17UavtrvcOB/cJisHdHNyIsR4hjmhK
-----END PRIVATE KEY-----
";
pub(crate) const EC_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg43VaWDBr1HdOtkwH
9kCDlP/vwUbfr2yh2wz1qUPCM3ihRANCAAQyQYj3flp6qvFe3g6yzjE4fKIKXi41
hTpKlHrjczsQlMmqjfzPMMTfVC39P7aE2w0YVkVYn9yCqwhkqMEX2K8u
-----END PRIVATE KEY-----
";
pub(crate) const EC_PUB: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMkGI935aeqrxXt4Oss4xOHyiCl4u
NYU6SpR643M7EJTJqo38zzDE31Qt/T+2hNsNGFZFWJ/cgqsIZKjBF9ivLg==
-----END PUBLIC KEY-----
";
pub(crate) const EC384_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDJie4nmFQmLkGtz7Sm
lrleP/cF1XBDpV6te/dLmvk2vIrgR/cC+0IKbGreRJ5KHwGhZANiAASh4If6j5yk
QLvOJyURDSsi0kCvUiPcvV3L+oKxRLKaJmlVkGGYnObIUqOrfIa1Eu4fdmBKohFQ
QG42zvJx8J5WmsJvdNluspmyfaPGJJSBg/94rxsWhP7cdZDOCuXiRhs=
-----END PRIVATE KEY-----
";
pub(crate) const EC384_PUB: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEoeCH+o+cpEC7ziclEQ0rItJAr1Ij3L1d
y/qCsUSymiZpVZBhmJzmyFKjq3yGtRLuH3ZgSqIRUEBuNs7ycfCeVprCb3TZbrKZ
sn2jxiSUgYP/eK8bFoT+3HWQzgrl4kYb
-----END PUBLIC KEY-----
";
pub(crate) const RSA_PRIV: &str = "-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDDNCqozpIxBWcF
v07V4vrARAQuwpIsBAqwJriXjSwHz4xMegye8x0FY0rj9X3vMjVWZ/w5/Mb6hvQb
9ZAFZlrWnimmnxuWUNLECFHeQgIbmmVradhSmwqWJfYFpJDAmIOvVnsXnhDYCb/F
+B5JstGM+/mjPh1/1oU/5yFhQD5LdBcR5rbs3PXCvJ/4lLCs0xM9g0VW1h9ZpAC9
1409rLv41ryNIh1aKFAJocQq2Oba1sAzZ4RZGQkgBwY1l8a3pDixPlMQrtGSvdz6
IWTvme0+5OX6GxdUcUO2cc9Lbmf3YKxzhG0653yJxePHfvcFmECAUDzhEAlAfTyc
H6UWtf2vAgMBAAECggEAVh3fDg7n9uFzxFjUXk7fIdA/6iMjmnCECJdki1OYD7AU
LK8Rf1Qwwu49nVjx4INNfZutbiWi4OaFrgoFKiSwQYuQQ3ZhFMz+VsZ2269SP7w7
LwqIiVTl9Dy2D2I9DAKc4c8sycwNkUmnxZ5DOm89vE1zof1mxT2uFnWQx9cwRFej
EVVqufPLk9hmzbCZouVml/7uGrmqw36Ra7Wv0KoYClyGC15SzVx8uv7NPdyserJ0
Fi0gpW+TpUf9EnVVhl/NrOQowxTN6MiMuoCBhmZhThzfhp0Y/VczEEQhodfZNTCu
TBoIrEM5O7sleUo8swkOLTljNLKVn+oThuy04m3ReQKBgQDgk4xN+9L8zcGcSx0q
/TJn+NOtRsfjRk5QJCNTrB0QXCsj519v2fJqI00jsf1hM4W4a6FglGYSCPqSUkRb
ruHkkzadht1W6+WMPWIRdvenSi/g3UsqSMRHPl/q8gizXA2A53oXKn5L0Sytfbwj
u85Fs8bAKmTFf2NYG2LtUWAJaQKBgQDehHneZSCkxyIVKNx9RkUbVWy9G5TdSxCw
Y86SFPpBsn28e1hYTHWBrHH+lUEGV9hn3bjOhMF6B1lJhUfdBu6k2DzPu08OKeOW
OJF6blUudOXqp/BSq+Ed48/N6+aWmEDgkhtoxml4IaWg31JU33pA8LXzHM4jj2DG
tmsyr2ATVwKBgDQQwSSLT50grtRnbbm7veXxAFJZ6Jm+gQV/e1k4u/xBAhdu2ud5
pgQJbybpaw8P/N6GxYE4pnlj74Pg4sxGvURbBPx8efBe/HcI/CWEaWI1hughJf4F
pMvHoEE+H9pFazQJdnrMdT9qnWsTjXzTW705Msj2iypmoEebAdJ3XUaRAoGARREt
mqAdD8hXheXW+nNzQ9ayF8iV3lJMbdOs7J7iRr4WVQicFVw2JPfXskO1mThvDV4+
3KtMOopJZo6eDbb3H+eWiIwFL8pEv/3y+eOBQRg7vSg/agm7qEFr4OjV++xqRspT
A6SCXC1lcZefwIRVOA7/CuTn/xWj3koE4Aibc6UCgYA3EhZ+ddZ2AvllFF3HnjuY
E3QD6/8oW5/zgX8/GpZBMD6xKedda8oyqbm/z4IQTy8BVsIPw1BNTL6QyXIB3biw
LZmwO6buLTH49UYTi3OMs65VAmpW4N9rHNQtVMevrHA3qZ2sVT83CmBbsvhnBXYj
vFhfZ0mg9vEJm9hkIn11Iw==
-----END PRIVATE KEY-----
";
pub(crate) const RSA_PUB: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwzQqqM6SMQVnBb9O1eL6
wEQELsKSLAQKsCa4l40sB8+MTHoMnvMdBWNK4/V97zI1Vmf8OfzG+ob0G/WQBWZa
1p4ppp8bllDSxAhR3kICG5pla2nYUpsKliX2BaSQwJiDr1Z7F54Q2Am/xfgeSbLR
jPv5oz4df9aFP+chYUA+S3QXEea27Nz1wryf+JSwrNMTPYNFVtYfWaQAvdeNPay7
+Na8jSIdWihQCaHEKtjm2tbAM2eEWRkJIAcGNZfGt6Q4sT5TEK7Rkr3c+iFk75nt
PuTl+hsXVHFDtnHPS25n92Csc4RtOud8icXjx373BZhAgFA84RAJQH08nB+lFrX9
rwIDAQAB
-----END PUBLIC KEY-----
";

/// An auth method over a fresh SQLite-backed barrier.
pub(crate) struct Fixture<B> {
    _dir: tempfile::TempDir,
    pub(crate) m: B,
    pub(crate) auth: Authorized,
    /// What the method was built from (to build another over the same storage).
    pub(crate) view: View,
    pub(crate) ctx: MethodContext,
}

/// The method `make` builds, mounted at `mount_path`, with a user-lockout
/// `threshold`.
pub(crate) async fn fixture<B>(
    mount_path: &str,
    threshold: u32,
    make: impl FnOnce(View, MethodContext) -> B,
) -> Fixture<B> {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&format!("sqlite://{}/v.db", dir.path().display())).await.unwrap();
    let barrier = Barrier::new(storage);
    let keyring = Keyring::generate(now_unix()).unwrap();
    let mut b = WriteBatch::new();
    b.put(KEYRING_PATH, Barrier::wrap_keyring(&keyring));
    barrier.storage().write(b).await.unwrap();
    let u = barrier.install(keyring);
    let barrier = Arc::new(barrier);
    let view = View::new(barrier.clone(), "logical/jwt-test/");
    let ctx = MethodContext {
        mount_path: mount_path.into(),
        accessor: format!("auth_{}_test", mount_path.trim_end_matches('/')),
        barrier,
        lockout: Arc::new(Lockout::new(LockoutConfig { threshold, ..Default::default() })),
    };
    let m = make(view.clone(), ctx.clone());
    Fixture { _dir: dir, m, auth: Authorized::unauthenticated(u), view, ctx }
}

impl<B: Backend> Fixture<B> {
    pub(crate) async fn call(&self, op: Operation, path: &str, data: Value) -> Result<Response, LogicalError> {
        let mut r = Request::new(op, path);
        r.data = data.as_object().cloned().unwrap_or_default();
        r.client_addr = Some("127.0.0.1".parse().unwrap());
        self.m.handle(&self.auth, r).await
    }
    pub(crate) async fn write(&self, path: &str, data: Value) {
        match self.call(Operation::Update, path, data).await {
            Ok(_) => {}
            Err(e) => panic!("write {path}: {e}"),
        }
    }
    pub(crate) async fn login(&self, role: &str, jwt: &str) -> Result<Login, LogicalError> {
        match self.call(Operation::Update, "login", json!({"role": role, "jwt": jwt})).await? {
            Response::Login(l) => Ok(*l),
            other => panic!("expected a login, got {other:?}"),
        }
    }
    pub(crate) async fn reject(&self, role: &str, jwt: &str) -> String {
        match self.login(role, jwt).await {
            Err(LogicalError::InvalidRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }
    /// Log in as `role` from `addr`.
    pub(crate) async fn login_from(&self, role: &str, jwt: &str, addr: &str) -> Result<Response, LogicalError> {
        let mut r = Request::new(Operation::Update, "login");
        r.data = json!({"role": role, "jwt": jwt}).as_object().cloned().unwrap();
        r.client_addr = Some(addr.parse().unwrap());
        self.m.handle(&self.auth, r).await
    }
}

pub(crate) fn data(r: Response) -> Map<String, Value> {
    match r {
        Response::Data { data: Some(d), .. } => d,
        other => panic!("expected data, got {other:?}"),
    }
}

pub(crate) fn err_msg(r: Result<Response, LogicalError>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

pub(crate) fn sign(alg: Algorithm, private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = private_pem.as_bytes();
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .unwrap();
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

pub(crate) fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// The raw public key bytes at the end of a PEM SubjectPublicKeyInfo.
pub(crate) fn spki_tail(pem: &str, n: usize) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    der[der.len() - n..].to_vec()
}

pub(crate) fn ed_jwk(pem: &str, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid, "x": URL_SAFE_NO_PAD.encode(spki_tail(pem, 32))})
}

pub(crate) fn ec_jwk(pem: &str, kid: &str) -> Value {
    let xy = spki_tail(pem, 64);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
           "x": URL_SAFE_NO_PAD.encode(&xy[..32]), "y": URL_SAFE_NO_PAD.encode(&xy[32..])})
}

pub(crate) const ISS: &str = "https://issuer.example";

pub(crate) fn claims(extra: Value) -> Value {
    let now = now_unix();
    let mut c = json!({"iss": ISS, "aud": "vault", "sub": "user-1", "email": "alice@example.com",
                       "groups": ["admins", "dev"], "org": {"team": "core"}, "iat": now, "exp": now + 300});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

// --- a tiny HTTP server for JWKS, discovery and TokenReview ---------------

#[derive(Clone, Default)]
pub(crate) struct Mock {
    pub(crate) routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
    /// (path, authorization header, body) of every request.
    pub(crate) seen: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Mock {
    pub(crate) async fn start() -> (Mock, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = Mock::default();
        let m = mock.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                            })
                            .unwrap_or_default()
                    };
                    let len: usize = header("content-length").parse().unwrap_or(0);
                    while buf.len() < head_end + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                    m.seen.lock().unwrap().push((path.clone(), header("authorization"), body));
                    let (status, text) =
                        m.routes.lock().unwrap().get(&path).cloned().unwrap_or((404, "{}".to_string()));
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (mock, addr)
    }

    pub(crate) fn set(&self, path: &str, status: u16, body: Value) {
        self.routes.lock().unwrap().insert(path.to_string(), (status, body.to_string()));
    }

    pub(crate) fn hits(&self, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(p, _, _)| p == path).count()
    }
}
