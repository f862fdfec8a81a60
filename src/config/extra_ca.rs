//! Certificates trusted beside the public roots, named by the environment
//! (`UNDERSTUDY_EXTRA_CA_CERTS`): read here, with the rest of what configures the gateway, so
//! that a file that cannot be read is a config problem (`Config::with_environment`); used by
//! `providers::transport`.

use std::sync::OnceLock;

/// The variable naming extra trusted certificates (PEM).
pub const EXTRA_CA_ENV: &str = "UNDERSTUDY_EXTRA_CA_CERTS";

/// The certificates `UNDERSTUDY_EXTRA_CA_CERTS` names, read once; `Err` says what is wrong
/// with the file. Checked at start-up (`serve`, `config check`), so a bad path stops the
/// gateway with the reason rather than failing every TLS handshake.
pub fn extra_roots() -> Result<&'static [rustls::pki_types::CertificateDer<'static>], String> {
    static ROOTS: OnceLock<Result<Vec<rustls::pki_types::CertificateDer<'static>>, String>> =
        OnceLock::new();
    ROOTS
        .get_or_init(|| match std::env::var_os(EXTRA_CA_ENV) {
            None => Ok(Vec::new()),
            Some(p) if p.is_empty() => Ok(Vec::new()),
            Some(p) => read_pem(std::path::Path::new(&p)),
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn read_pem(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let why = |e: &dyn std::fmt::Display| {
        format!(
            "{EXTRA_CA_ENV}={}: {e}; it must name a PEM file of CA certificates",
            path.display()
        )
    };
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| why(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| why(&e))?;
    if certs.is_empty() {
        return Err(why(&"it holds no CERTIFICATE block"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_ca_file_that_is_not_pem_says_which_variable_and_what_it_needs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = read_pem(&missing).unwrap_err();
        assert!(e.starts_with(EXTRA_CA_ENV), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = read_pem(&junk).unwrap_err();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
    }
}
