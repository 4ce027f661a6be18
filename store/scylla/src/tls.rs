//! TLS to the cluster (rustls): the nodes' certificates are checked against the operator's CA
//! file, and a client certificate is presented when the cluster requires one.
//!
//! The driver names each node by its IP address during the handshake, so by default a node's
//! certificate must list that address. Many clusters issue certificates for a DNS name
//! instead; `tls_server_name` checks every node's certificate against that name (the chain is
//! verified the same way, only the name differs).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::options::ScyllaOptions;

/// The client configuration the options ask for, or `None` when TLS is off.
pub(crate) fn client_config(options: &ScyllaOptions) -> Result<Option<Arc<ClientConfig>>, String> {
    let authorities = match (&options.tls_ca_file, &options.tls_ca) {
        (None, None) => return Ok(None),
        (Some(file), _) => certificates(file)?,
        (None, Some(pem)) => pem_certificates(pem.as_bytes(), "store.tls_ca")?,
    };
    // The driver's rustls carries aws-lc-rs; naming the provider keeps the choice explicit
    // where another crate's feature could bring a second one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in authorities {
        roots.add(cert).map_err(|e| format!("store.tls_ca_file/tls_ca: {e}"))?;
    }
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &options.tls_server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("store.tls_server_name `{name}`: {e}"))?;
            let chain = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("store.tls_ca_file: {e}"))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NamedServer { name, chain }))
        }
    };
    let config = match (&options.tls_cert_file, &options.tls_key_file) {
        (Some(cert_file), Some(key_file)) => {
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("store.tls_key_file {}: {e}", key_file.display()))?;
            builder
                .with_client_auth_cert(certificates(cert_file)?, key)
                .map_err(|e| format!("store.tls_cert_file/tls_key_file: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// Every certificate in a PEM file (at least one).
fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    pem_certificates(&pem, &file.display().to_string())
}

/// Every certificate in PEM text (at least one); `origin` names it in errors.
fn pem_certificates(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{origin}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{origin}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// Verifies a node's certificate chain as usual, against a configured name rather than the
/// node's address.
#[derive(Debug)]
struct NamedServer {
    name: ServerName<'static>,
    chain: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _node_address: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chain.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}
