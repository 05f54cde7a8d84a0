//! The kubelet's PodResources API (`v1.PodResourcesLister/List`, gRPC on the unix socket
//! `/var/lib/kubelet/pod-resources/kubelet.sock`): which pod and container the kubelet
//! assigned each device to. The NVIDIA device plugin names GPUs by UUID (`GPU-…`, MIG
//! instances `MIG-…`), with `::<n>` replicas under time-slicing.
//!
//! Used to cross-check the cgroup's answer (a process tagged with a pod that the kubelet
//! did not give its GPU is counted and logged: a process in another pod's GPU, or a
//! device plugin that shares GPUs without telling the kubelet) and to tag a process whose
//! cgroup cannot be read when its GPU belongs to exactly one container.
//!
//! One unary call over HTTP/2 (hyper) with the messages decoded by hand ([`decode_list`]):
//! the four fields needed, any other field skipped by its wire type.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt as _;

/// One container's devices of one resource, as the kubelet assigned them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub resource_name: String,
    pub device_ids: Vec<String>,
}

/// The containers holding each device, by the device's id without a `::<n>` replica
/// suffix (a GPU UUID).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceIndex {
    holders: BTreeMap<String, Vec<(String, String, String)>>,
}

impl DeviceIndex {
    /// Indexes `assignments` by device.
    pub fn new(assignments: &[Assignment]) -> DeviceIndex {
        let mut holders: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for a in assignments {
            for id in &a.device_ids {
                let device = id.split("::").next().unwrap_or(id).to_owned();
                let h = (a.namespace.clone(), a.pod.clone(), a.container.clone());
                let list = holders.entry(device).or_default();
                if !list.contains(&h) {
                    list.push(h);
                }
            }
        }
        DeviceIndex { holders }
    }

    /// The (namespace, pod, container) holding GPU `uuid`; empty when none does.
    pub fn holders(&self, uuid: &str) -> &[(String, String, String)] {
        self.holders.get(uuid).map_or(&[], Vec::as_slice)
    }

    /// Whether the kubelet assigned any device at all.
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

/// Calls `List` on the socket at `path`.
pub async fn list(path: &Path, timeout: Duration) -> Result<Vec<Assignment>, String> {
    tokio::time::timeout(timeout, call(path))
        .await
        .map_err(|_| format!("PodResources List on '{}' timed out", path.display()))?
}

async fn call(path: &Path) -> Result<Vec<Assignment>, String> {
    let at = |e: &dyn std::fmt::Display| format!("PodResources on '{}': {e}", path.display());
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| at(&e))?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| at(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // An empty ListPodResourcesRequest in one uncompressed gRPC message.
    let body = http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]));
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/v1.PodResourcesLister/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .map_err(|e| at(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| at(&e))?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.map_err(|e| at(&e))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if status != "0" {
        let message = trailers
            .get("grpc-message")
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(at(&format!(
            "HTTP {} grpc-status '{status}' {message}",
            parts.status
        )));
    }
    let data = collected.to_bytes();
    let Some((&flag, rest)) = data.split_first() else {
        return Err(at(&"an empty response"));
    };
    if flag != 0 || rest.len() < 4 {
        return Err(at(&"a compressed or truncated gRPC message"));
    }
    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let message = rest
        .get(4..4 + len)
        .ok_or_else(|| at(&"a truncated gRPC message"))?;
    decode_list(message).map_err(|e| at(&e))
}

/// Decodes a `ListPodResourcesResponse`: `pod_resources` (1) of `PodResources` { `name`
/// (1), `namespace` (2), `containers` (3) of `ContainerResources` { `name` (1),
/// `devices` (2) of `ContainerDevices` { `resource_name` (1), `device_ids` (2) } } }.
pub fn decode_list(b: &[u8]) -> Result<Vec<Assignment>, String> {
    let mut out = Vec::new();
    for (field, value) in fields(b)? {
        if field != 1 {
            continue;
        }
        let (mut pod, mut namespace, mut containers) = (String::new(), String::new(), Vec::new());
        for (f, v) in fields(bytes_of(value)?)? {
            match f {
                1 => pod = text(v)?,
                2 => namespace = text(v)?,
                3 => containers.push(bytes_of(v)?),
                _ => {}
            }
        }
        for c in containers {
            let mut name = String::new();
            let mut devices = Vec::new();
            for (f, v) in fields(c)? {
                match f {
                    1 => name = text(v)?,
                    2 => devices.push(bytes_of(v)?),
                    _ => {}
                }
            }
            for d in devices {
                let mut a = Assignment {
                    namespace: namespace.clone(),
                    pod: pod.clone(),
                    container: name.clone(),
                    ..Assignment::default()
                };
                for (f, v) in fields(d)? {
                    match f {
                        1 => a.resource_name = text(v)?,
                        2 => a.device_ids.push(text(v)?),
                        _ => {}
                    }
                }
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// A field's value: a varint, a length-delimited byte string, or fixed bytes.
enum Value<'a> {
    Varint,
    Bytes(&'a [u8]),
    Fixed,
}

fn bytes_of(v: Value<'_>) -> Result<&[u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err("a message field is not length-delimited".into()),
    }
}

fn text(v: Value<'_>) -> Result<String, String> {
    String::from_utf8(bytes_of(v)?.to_vec()).map_err(|_| "a string field is not UTF-8".into())
}

/// The (field number, value) pairs of one message.
fn fields(mut b: &[u8]) -> Result<Vec<(u64, Value<'_>)>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (key, rest) = varint(b)?;
        b = rest;
        let value = match key & 7 {
            0 => {
                let (_, rest) = varint(b)?;
                b = rest;
                Value::Varint
            }
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                b = b.get(n..).ok_or("a truncated fixed field")?;
                Value::Fixed
            }
            2 => {
                let (len, rest) = varint(b)?;
                let len = usize::try_from(len).map_err(|_| "a field too long")?;
                let v = rest
                    .get(..len)
                    .ok_or("a truncated length-delimited field")?;
                b = &rest[len..];
                Value::Bytes(v)
            }
            t => return Err(format!("wire type {t} is not protobuf 3")),
        };
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn varint(b: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, &b[i + 1..]));
        }
    }
    Err("a truncated varint".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, n: u8, bytes: &[u8]) {
        out.push((n << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn a_list_response_names_each_containers_gpus() {
        let mut dev = Vec::new();
        field(&mut dev, 1, b"nvidia.com/gpu");
        field(&mut dev, 2, b"GPU-1::0");
        field(&mut dev, 2, b"GPU-2");
        dev.extend_from_slice(&[0x1a, 0x00]); // topology (3), empty: skipped
        let mut c = Vec::new();
        field(&mut c, 1, b"vllm");
        field(&mut c, 2, &dev);
        c.extend_from_slice(&[0x18, 0x05]); // cpu_ids (3) as a varint: skipped
        let mut pod = Vec::new();
        field(&mut pod, 1, b"llama-0");
        field(&mut pod, 2, b"inference");
        field(&mut pod, 3, &c);
        let mut resp = Vec::new();
        field(&mut resp, 1, &pod);
        let got = decode_list(&resp).expect("decodes");
        assert_eq!(
            got,
            vec![Assignment {
                namespace: "inference".into(),
                pod: "llama-0".into(),
                container: "vllm".into(),
                resource_name: "nvidia.com/gpu".into(),
                device_ids: vec!["GPU-1::0".into(), "GPU-2".into()],
            }]
        );
        let idx = DeviceIndex::new(&got);
        assert_eq!(
            idx.holders("GPU-1").len(),
            1,
            "the replica suffix is dropped"
        );
        assert_eq!(idx.holders("GPU-3"), &[] as &[(String, String, String)]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &[0x0a, 0x05, 1][..],
            &[0xff; 11][..],
            &[0x0b][..],
            &[0x0a][..],
        ] {
            assert!(decode_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_list(&[]).expect("empty"), vec![]);
    }
}
