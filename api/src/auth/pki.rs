//! Per-tenant certificate authority: client certificates, PKCS#12 bundles, CRLs, and
//! at-rest encryption of CA private keys under the platform master key.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Months, TimeDelta, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretSlice, SecretString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

/// Tenant CAs are long-lived so that re-issuing every device certificate is rare.
const CA_VALIDITY_MONTHS: u32 = 120;
/// Backdating absorbs small clock differences between this server and the devices.
const CLOCK_SKEW_SECONDS: i64 = 60;
const SERVER_CERT_VALIDITY_DAYS: i64 = 365;
/// Longest client certificate we agree to issue; anything longer is a caller bug.
pub const MAX_CLIENT_VALIDITY_DAYS: u32 = 3650;
/// X.520 upper bound for commonName and organizationName.
const MAX_NAME_CHARS: usize = 64;
/// RFC 5280 limits serial numbers to 20 octets.
const MAX_SERIAL_BYTES: usize = 20;
/// The bundle passwords are random (see [`random_password`]), so a moderate count keeps
/// imports fast on phones without weakening them.
const MODERN_PKCS12_ITERATIONS: u32 = 10_000;
/// OpenSSL's historical default; older iOS/Android importers expect this range.
const LEGACY_PKCS12_ITERATIONS: u32 = 2048;
pub const MIN_PASSWORD_LEN: usize = 16;
const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 12;

// Look-alike characters (I/l/1, O/0) are left out because these passwords are read off
// paper or a screen and typed on a phone.
const PASSWORD_UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const PASSWORD_LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
const PASSWORD_DIGITS: &[u8] = b"23456789";
const PASSWORD_SYMBOLS: &[u8] = b"!#%+-=?@";

/// Errors from the PKI module. Messages never carry key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        field: &'static str,
        reason: &'static str,
    },
    #[error("invalid certificate: {0}")]
    InvalidCertificate(&'static str),
    #[error("the private key could not be parsed")]
    InvalidKey,
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate authority has expired")]
    CaExpired,
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    #[error("PKCS#12 encoding failed: {0}")]
    Pkcs12(String),
    #[error("unknown PKCS#12 encoding (expected MODERN or LEGACY)")]
    UnknownEncoding,
    #[error("unknown revocation reason")]
    UnknownRevocationReason,
    #[error("the master key must be 32 bytes of standard base64")]
    InvalidMasterKey,
    #[error("encryption failed")]
    Encryption,
    #[error("the sealed value is malformed or has an unsupported version")]
    MalformedSealed,
    #[error("decryption failed: wrong key, wrong context or tampered data")]
    Decryption,
}

/// A tenant CA certificate and its private key (PKCS#8 PEM).
#[derive(Clone)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    key_pem: SecretString,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("fingerprint_sha256", &fingerprint_sha256(&self.cert_der))
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

impl CaMaterial {
    pub fn key_pem(&self) -> &SecretString {
        &self.key_pem
    }

    /// Loads a stored CA, refusing a certificate that is not a CA or a key that is not its own,
    /// so that a mix-up in storage fails here rather than at the first signature.
    pub fn from_pem(cert_pem: &str, key_pem: SecretString) -> Result<Self, PkiError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| PkiError::InvalidCertificate("CA certificate PEM could not be read"))?
            .to_vec();
        let cert = parse_certificate(&cert_der)?;
        if !cert.is_ca() {
            return Err(PkiError::InvalidCertificate("not a CA certificate"));
        }
        let key = KeyPair::from_pem(key_pem.expose_secret()).map_err(|_| PkiError::InvalidKey)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::KeyMismatch);
        }
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key_pem,
        })
    }

    /// Loads a CA whose key was sealed with [`CaMaterial::seal_key`].
    pub fn from_sealed(
        cert_pem: &str,
        sealed_key: &str,
        master_key: &MasterKey,
        aad: &[u8],
    ) -> Result<Self, PkiError> {
        let key_bytes = master_key.decrypt(sealed_key, aad)?;
        let key_pem = std::str::from_utf8(key_bytes.expose_secret())
            .map_err(|_| PkiError::InvalidKey)?
            .to_owned();
        Self::from_pem(cert_pem, SecretString::from(key_pem))
    }

    /// Encrypts the CA key for storage; `aad` should bind it to its owner (e.g. the tenant id).
    pub fn seal_key(&self, master_key: &MasterKey, aad: &[u8]) -> Result<String, PkiError> {
        master_key.encrypt(self.key_pem.expose_secret().as_bytes(), aad)
    }

    pub fn fingerprint_sha256(&self) -> String {
        fingerprint_sha256(&self.cert_der)
    }

    /// Signs `message` with the CA key (ECDSA P-256, SHA-256, ASN.1 DER signature): used for
    /// records that must be provably the city's own, such as audit checkpoints.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        use rcgen::SigningKey as _;
        let key =
            KeyPair::from_pem(self.key_pem.expose_secret()).map_err(|_| PkiError::InvalidKey)?;
        key.sign(message).map_err(|_| PkiError::InvalidKey)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key =
            KeyPair::from_pem(self.key_pem.expose_secret()).map_err(|_| PkiError::InvalidKey)?;
        Ok(Issuer::from_ca_cert_der(
            &CertificateDer::from(self.cert_der.as_slice()),
            key,
        )?)
    }
}

/// Checks a signature made by [`CaMaterial::sign`] against the CA certificate alone (no key).
pub fn verify_ca_signature(ca_cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(cert) = parse_certificate(ca_cert_der) else {
        return false;
    };
    let public_key = cert.public_key().subject_public_key.data.as_ref();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(message, signature)
        .is_ok()
}

/// Creates a tenant CA: ECDSA P-256, ten years, CA:TRUE with pathlen 0 (it signs only
/// device certificates, never sub-CAs).
pub fn generate_tenant_ca(tenant_slug: &str, tenant_name: &str) -> Result<CaMaterial, PkiError> {
    check_name("tenant slug", tenant_slug)?;
    check_name("tenant name", tenant_name)?;
    let common_name = format!("Renkei {tenant_slug} CA");
    check_name("CA common name", &common_name)?;

    let now = now_seconds()?;
    let not_after = now
        .checked_add_months(Months::new(CA_VALIDITY_MONTHS))
        .ok_or(PkiError::InvalidInput {
            field: "CA validity",
            reason: "out of range",
        })?;

    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&common_name, tenant_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = to_offset(now - TimeDelta::seconds(CLOCK_SKEW_SECONDS))?;
    params.not_after = to_offset(not_after)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: SecretString::from(key.serialize_pem()),
    })
}

/// A freshly issued client certificate with its private key (PKCS#8 DER).
#[derive(Clone)]
pub struct IssuedCertificate {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    key_der: SecretSlice<u8>,
    /// Canonical lowercase hex, as produced by [`serial_hex_from_bytes`].
    pub serial_hex: String,
    pub fingerprint_sha256: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl IssuedCertificate {
    pub fn key_der(&self) -> &SecretSlice<u8> {
        &self.key_der
    }
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("serial_hex", &self.serial_hex)
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_der", &"[redacted]")
            .finish()
    }
}

/// Issues a device client certificate for one login. The key pair is generated here because
/// the device receives it inside a PKCS#12 bundle rather than sending a CSR.
pub fn issue_client_certificate(
    ca: &CaMaterial,
    tenant_slug: &str,
    login_id: &str,
    validity_days: u32,
) -> Result<IssuedCertificate, PkiError> {
    check_name("tenant slug", tenant_slug)?;
    check_name("login id", login_id)?;
    if validity_days == 0 || validity_days > MAX_CLIENT_VALIDITY_DAYS {
        return Err(PkiError::InvalidInput {
            field: "validity days",
            reason: "must be between 1 and 3650",
        });
    }

    let ca_cert = parse_certificate(&ca.cert_der)?;
    let ca_not_after = asn1_to_chrono(ca_cert.validity().not_after.timestamp())?;
    let now = now_seconds()?;
    if ca_not_after <= now {
        return Err(PkiError::CaExpired);
    }
    let not_before = now - TimeDelta::seconds(CLOCK_SKEW_SECONDS);
    // A certificate outliving its CA would only fail later on the device, so stop at the CA's end.
    let not_after = (now + TimeDelta::days(i64::from(validity_days))).min(ca_not_after);

    let issuer = ca.issuer()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(login_id, tenant_slug);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, &issuer)?;
    let cert_der = cert.der().to_vec();
    // Read the serial back from the encoding so it matches what TLS and CRL parsers report.
    let info = inspect_certificate(&cert_der)?;
    Ok(IssuedCertificate {
        cert_pem: cert.pem(),
        key_der: SecretSlice::from(key.serialize_der()),
        serial_hex: info.serial_hex,
        fingerprint_sha256: info.fingerprint_sha256,
        not_before: info.not_before,
        not_after: info.not_after,
        cert_der,
    })
}

/// Encryption profile of a PKCS#12 bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pkcs12Encoding {
    /// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with an HMAC-SHA256 MAC.
    #[default]
    Modern,
    /// pbeWithSHAAnd3-KeyTripleDES-CBC with an HMAC-SHA1 MAC, for older iOS/Android.
    Legacy,
}

impl Pkcs12Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Modern => "MODERN",
            Self::Legacy => "LEGACY",
        }
    }
}

impl fmt::Display for Pkcs12Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pkcs12Encoding {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "MODERN" => Ok(Self::Modern),
            "LEGACY" => Ok(Self::Legacy),
            _ => Err(PkiError::UnknownEncoding),
        }
    }
}

/// Packs key, client certificate and CA certificate into a password-protected PKCS#12 file.
/// The key bag carries `friendly_name`; the certificate bags carry their subject DN
/// (p12-keystore decides that).
pub fn build_pkcs12(
    issued: &IssuedCertificate,
    ca_cert_der: &[u8],
    friendly_name: &str,
    password: &str,
    encoding: Pkcs12Encoding,
) -> Result<Vec<u8>, PkiError> {
    check_name("friendly name", friendly_name)?;
    if password.is_empty() {
        return Err(PkiError::InvalidInput {
            field: "PKCS#12 password",
            reason: "must not be empty",
        });
    }
    let leaf = parse_certificate(&issued.cert_der)?;
    let ca = parse_certificate(ca_cert_der)?;
    if leaf.issuer().as_raw() != ca.subject().as_raw() {
        return Err(PkiError::InvalidCertificate(
            "the CA certificate did not issue this certificate",
        ));
    }

    let key = p12_keystore::PrivateKey::from_der(issued.key_der.expose_secret())
        .map_err(|_| PkiError::InvalidKey)?;
    let leaf_cert = p12_keystore::Certificate::from_der(&issued.cert_der).map_err(pkcs12_error)?;
    let ca_cert = p12_keystore::Certificate::from_der(ca_cert_der).map_err(pkcs12_error)?;
    let local_key_id = Sha256::digest(&issued.cert_der).to_vec();
    let chain = p12_keystore::PrivateKeyChain::new(local_key_id, key, [leaf_cert, ca_cert]);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        friendly_name,
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );

    let (algorithm, mac, iterations) = match encoding {
        Pkcs12Encoding::Modern => (
            p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256,
            p12_keystore::MacAlgorithm::HmacSha256,
            MODERN_PKCS12_ITERATIONS,
        ),
        Pkcs12Encoding::Legacy => (
            p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc,
            p12_keystore::MacAlgorithm::HmacSha1,
            LEGACY_PKCS12_ITERATIONS,
        ),
    };
    store
        .writer(password)
        .encryption_algorithm(algorithm)
        .encryption_iterations(iterations)
        .mac_algorithm(mac)
        .mac_iterations(iterations)
        .write()
        .map_err(pkcs12_error)
}

fn pkcs12_error(err: p12_keystore::error::Error) -> PkiError {
    PkiError::Pkcs12(err.to_string())
}

/// Random password of `len` characters (at least [`MIN_PASSWORD_LEN`]) with at least one
/// upper-case letter, lower-case letter, digit and symbol.
pub fn random_password(len: usize) -> String {
    let len = len.max(MIN_PASSWORD_LEN);
    let mut rng = rand::rng();
    let classes = [
        PASSWORD_UPPER,
        PASSWORD_LOWER,
        PASSWORD_DIGITS,
        PASSWORD_SYMBOLS,
    ];
    let alphabet = classes.concat();
    let mut chars: Vec<u8> = classes.iter().map(|class| pick(&mut rng, class)).collect();
    while chars.len() < len {
        chars.push(pick(&mut rng, &alphabet));
    }
    // The guaranteed characters would otherwise always sit at the front.
    chars.shuffle(&mut rng);
    chars.into_iter().map(char::from).collect()
}

fn pick(rng: &mut impl Rng, set: &[u8]) -> u8 {
    set[rng.random_range(0..set.len())]
}

/// Reason recorded for a revoked certificate (RFC 5280 CRLReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "UNSPECIFIED",
            Self::KeyCompromise => "KEY_COMPROMISE",
            Self::CaCompromise => "CA_COMPROMISE",
            Self::AffiliationChanged => "AFFILIATION_CHANGED",
            Self::Superseded => "SUPERSEDED",
            Self::CessationOfOperation => "CESSATION_OF_OPERATION",
            Self::CertificateHold => "CERTIFICATE_HOLD",
            Self::PrivilegeWithdrawn => "PRIVILEGE_WITHDRAWN",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_uppercase().as_str() {
            "UNSPECIFIED" => Self::Unspecified,
            "KEY_COMPROMISE" => Self::KeyCompromise,
            "CA_COMPROMISE" => Self::CaCompromise,
            "AFFILIATION_CHANGED" => Self::AffiliationChanged,
            "SUPERSEDED" => Self::Superseded,
            "CESSATION_OF_OPERATION" => Self::CessationOfOperation,
            "CERTIFICATE_HOLD" => Self::CertificateHold,
            "PRIVILEGE_WITHDRAWN" => Self::PrivilegeWithdrawn,
            _ => return Err(PkiError::UnknownRevocationReason),
        })
    }
}

impl From<RevocationReason> for rcgen::RevocationReason {
    fn from(reason: RevocationReason) -> Self {
        match reason {
            RevocationReason::Unspecified => Self::Unspecified,
            RevocationReason::KeyCompromise => Self::KeyCompromise,
            RevocationReason::CaCompromise => Self::CaCompromise,
            RevocationReason::AffiliationChanged => Self::AffiliationChanged,
            RevocationReason::Superseded => Self::Superseded,
            RevocationReason::CessationOfOperation => Self::CessationOfOperation,
            RevocationReason::CertificateHold => Self::CertificateHold,
            RevocationReason::PrivilegeWithdrawn => Self::PrivilegeWithdrawn,
        }
    }
}

/// One CRL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// Any hex form of the serial; see [`normalize_serial_hex`].
    pub serial_hex: String,
    pub revoked_at: DateTime<Utc>,
    pub reason: Option<RevocationReason>,
}

/// Signs a complete (non-delta) DER CRL for the CA.
pub fn generate_crl(
    ca: &CaMaterial,
    revoked: &[RevokedEntry],
    crl_number: u64,
    next_update_days: u32,
) -> Result<Vec<u8>, PkiError> {
    if next_update_days == 0 {
        return Err(PkiError::InvalidInput {
            field: "next update days",
            reason: "must be at least 1",
        });
    }
    let ca_cert = parse_certificate(&ca.cert_der)?;
    let issuer = ca.issuer()?;
    let now = now_seconds()?;

    let revoked_certs = revoked
        .iter()
        .map(|entry| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_bytes(&entry.serial_hex)?),
                revocation_time: to_offset(entry.revoked_at)?,
                reason_code: entry.reason.map(Into::into),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;

    let params = CertificateRevocationListParams {
        this_update: to_offset(now)?,
        next_update: to_offset(now + TimeDelta::days(i64::from(next_update_days)))?,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        // The CRL's authority key id must equal the CA's subject key id, which may have been
        // computed differently if the CA was imported rather than generated here.
        key_identifier_method: subject_key_id(&ca_cert)
            .map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified),
    };
    Ok(params.signed_by(&issuer)?.der().to_vec())
}

/// 256-bit key that seals CA private keys at rest (AES-256-GCM).
pub struct MasterKey(SecretBox<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }

    pub fn generate() -> Self {
        Self(SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            rand::rng().fill_bytes(key)
        }))
    }

    /// Accepts standard base64 with padding; surrounding whitespace (a trailing newline from a
    /// file or environment variable) is ignored.
    pub fn from_base64(s: &str) -> Result<Self, PkiError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(s.trim())
                .map_err(|_| PkiError::InvalidMasterKey)?,
        );
        if decoded.len() != 32 {
            return Err(PkiError::InvalidMasterKey);
        }
        Ok(Self(SecretBox::init_with_mut(|key: &mut [u8; 32]| {
            key.copy_from_slice(&decoded)
        })))
    }

    pub fn to_base64(&self) -> SecretString {
        SecretString::from(BASE64.encode(self.0.expose_secret()))
    }

    /// Seals `plaintext` as `v1:` + base64(nonce ‖ ciphertext ‖ tag). `aad` is authenticated
    /// but not stored, so the same context must be given to [`MasterKey::decrypt`].
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, PkiError> {
        let cipher = self.cipher()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| PkiError::Encryption)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    pub fn decrypt(&self, sealed: &str, aad: &[u8]) -> Result<SecretSlice<u8>, PkiError> {
        let encoded = sealed
            .trim()
            .strip_prefix(SEALED_PREFIX)
            .ok_or(PkiError::MalformedSealed)?;
        let raw = BASE64
            .decode(encoded)
            .map_err(|_| PkiError::MalformedSealed)?;
        if raw.len() < NONCE_LEN {
            return Err(PkiError::MalformedSealed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| PkiError::MalformedSealed)?;
        let plaintext = self
            .cipher()?
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| PkiError::Decryption)?;
        Ok(SecretSlice::from(plaintext))
    }

    fn cipher(&self) -> Result<Aes256Gcm, PkiError> {
        Aes256Gcm::new_from_slice(self.0.expose_secret()).map_err(|_| PkiError::InvalidMasterKey)
    }
}

/// What the server needs from a presented client certificate to find its database row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertInfo {
    pub serial_hex: String,
    pub fingerprint_sha256: String,
    pub common_name: Option<String>,
    pub organization: Option<String>,
    pub issuer_common_name: Option<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Reads identifying fields from a DER certificate. It does not verify anything: the TLS
/// layer has already checked the chain and revocation.
pub fn inspect_certificate(der: &[u8]) -> Result<PeerCertInfo, PkiError> {
    let cert = parse_certificate(der)?;
    let validity = cert.validity();
    Ok(PeerCertInfo {
        serial_hex: serial_hex_from_bytes(cert.raw_serial()),
        fingerprint_sha256: fingerprint_sha256(der),
        common_name: first_attribute(cert.subject().iter_common_name()),
        organization: first_attribute(cert.subject().iter_organization()),
        issuer_common_name: first_attribute(cert.issuer().iter_common_name()),
        not_before: asn1_to_chrono(validity.not_before.timestamp())?,
        not_after: asn1_to_chrono(validity.not_after.timestamp())?,
    })
}

/// Self-signed certificate for `localhost`, `127.0.0.1` and `::1`, used when no server
/// certificate is configured. Returns `(cert_pem, key_pem)`.
pub fn self_signed_server_certificate() -> Result<(String, SecretString), PkiError> {
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    params.distinguished_name = distinguished_name("localhost", "Renkei");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial());
    let now = now_seconds()?;
    params.not_before = to_offset(now - TimeDelta::seconds(CLOCK_SKEW_SECONDS))?;
    params.not_after = to_offset(now + TimeDelta::days(SERVER_CERT_VALIDITY_DAYS))?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), SecretString::from(key.serialize_pem())))
}

/// Lowercase hex SHA-256 of a DER encoding.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Canonical serial form: lowercase hex of the unsigned big-endian value without leading zero
/// bytes. DER may prepend 0x00 to keep the INTEGER positive; stripping it means a serial read
/// from a certificate, from a CRL entry or from our own records always compares equal.
pub fn serial_hex_from_bytes(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    match &bytes[start..] {
        [] => "00".to_owned(),
        magnitude => hex::encode(magnitude),
    }
}

/// Normalizes a serial typed by a person or another tool ("0A:1B", "a1b", "00a1b") into the
/// canonical form of [`serial_hex_from_bytes`].
pub fn normalize_serial_hex(input: &str) -> Result<String, PkiError> {
    Ok(serial_hex_from_bytes(&serial_bytes(input)?))
}

fn serial_bytes(input: &str) -> Result<Vec<u8>, PkiError> {
    const INVALID: PkiError = PkiError::InvalidInput {
        field: "serial number",
        reason: "must be 1 to 20 bytes of hex",
    };
    let mut digits: String = input.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    if digits.len() % 2 == 1 {
        digits.insert(0, '0');
    }
    let bytes = hex::decode(&digits).map_err(|_| INVALID)?;
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let magnitude = &bytes[start..];
    if digits.is_empty() || magnitude.len() > MAX_SERIAL_BYTES {
        return Err(INVALID);
    }
    Ok(magnitude.to_vec())
}

/// 128 random bits with the top bit cleared, so the DER INTEGER is positive and fits the
/// 20-octet limit; zero is excluded because RFC 5280 requires a positive serial.
fn random_serial() -> SerialNumber {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 16];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 0x7f;
        if bytes.iter().any(|b| *b != 0) {
            return SerialNumber::from_slice(&bytes);
        }
    }
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::InvalidCertificate(
            "trailing data after the certificate",
        )),
        Err(_) => Err(PkiError::InvalidCertificate("DER could not be parsed")),
    }
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

fn first_attribute<'a>(
    mut attrs: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
) -> Option<String> {
    attrs
        .next()
        .and_then(|attr| attr.as_str().ok())
        .map(str::to_owned)
}

fn distinguished_name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    dn
}

fn check_name(field: &'static str, value: &str) -> Result<(), PkiError> {
    if value.trim().is_empty() {
        return Err(PkiError::InvalidInput {
            field,
            reason: "must not be empty",
        });
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(PkiError::InvalidInput {
            field,
            reason: "must be at most 64 characters",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(PkiError::InvalidInput {
            field,
            reason: "must not contain control characters",
        });
    }
    Ok(())
}

/// Certificates carry whole seconds; truncating up front keeps the times we return equal to
/// the times in the encoding.
fn now_seconds() -> Result<DateTime<Utc>, PkiError> {
    asn1_to_chrono(Utc::now().timestamp())
}

fn asn1_to_chrono(timestamp: i64) -> Result<DateTime<Utc>, PkiError> {
    DateTime::from_timestamp(timestamp, 0).ok_or(PkiError::InvalidCertificate("time out of range"))
}

fn to_offset(at: DateTime<Utc>) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(at.timestamp()).map_err(|_| PkiError::InvalidInput {
        field: "time",
        reason: "out of range",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::{CertificateRevocationListDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use x509_parser::extensions::GeneralName;

    use super::*;

    const PASSWORD: &str = "Test-pass-2345!x";

    /// Files for the external tools; removed on drop so failed runs leave nothing behind.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let mut suffix = [0u8; 8];
            rand::rng().fill_bytes(&mut suffix);
            let path =
                std::env::temp_dir().join(format!("renkei-pki-test-{}", hex::encode(suffix)));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ca_and_client() -> (CaMaterial, IssuedCertificate) {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let issued = issue_client_certificate(&ca, "kita", "nurse01", 365).unwrap();
        (ca, issued)
    }

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        x509_parser::parse_x509_certificate(der).unwrap().1
    }

    fn openssl(args: &[&str]) -> (bool, String) {
        let output = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl binary must be installed for these tests");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    fn openssl_pkcs12(file: &Path, password: &str, extra: &[&str]) -> (bool, String) {
        let file = file.to_str().unwrap();
        let pass = format!("pass:{password}");
        let mut args = vec!["pkcs12", "-in", file, "-passin", pass.as_str(), "-nodes"];
        args.extend_from_slice(extra);
        openssl(&args)
    }

    const PYTHON_LOAD: &str = r#"
import sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
data = open(sys.argv[1], "rb").read()
key, cert, extra = pkcs12.load_key_and_certificates(data, sys.argv[2].encode())
assert isinstance(key, ec.EllipticCurvePrivateKey)
assert key.public_key() == cert.public_key()
print("key", key.curve.name)
print("cert", cert.fingerprint(hashes.SHA256()).hex())
for c in extra:
    print("extra", c.fingerprint(hashes.SHA256()).hex())
"#;

    fn python_pkcs12(file: &Path, password: &str) -> (bool, String) {
        let output = Command::new("python3")
            .args(["-c", PYTHON_LOAD, file.to_str().unwrap(), password])
            .output()
            .expect("python3 with the cryptography package must be installed for these tests");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn client_verifier(
        ca: &CaMaterial,
        crl: Vec<u8>,
    ) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der.clone()))
            .unwrap();
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(vec![CertificateRevocationListDer::from(crl)])
            .allow_unauthenticated()
            .build()
            .unwrap()
    }

    fn verify(
        verifier: &Arc<dyn rustls::server::danger::ClientCertVerifier>,
        issued: &IssuedCertificate,
    ) -> Result<(), rustls::Error> {
        verifier
            .verify_client_cert(
                &CertificateDer::from(issued.cert_der.clone()),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn tenant_ca_is_a_ten_year_p256_ca_with_cert_and_crl_signing() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let cert = parse(&ca.cert_der);

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical);
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));

        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign());
        assert!(ku.value.crl_sign());

        let validity = cert.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        let days = span / 86_400;
        assert!((3652..=3654).contains(&days), "CA validity is {days} days");
        let now = Utc::now().timestamp();
        assert!(validity.not_before.timestamp() <= now);
        assert!(validity.not_before.timestamp() >= now - 120);

        let info = inspect_certificate(&ca.cert_der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("Renkei kita CA"));
        assert_eq!(info.organization.as_deref(), Some("Kita City"));
        assert_eq!(info.issuer_common_name.as_deref(), Some("Renkei kita CA"));
        assert_eq!(
            cert.public_key()
                .algorithm
                .parameters
                .as_ref()
                .map(|p| p.as_oid().unwrap().to_id_string()),
            Some("1.2.840.10045.3.1.7".to_owned()),
            "the CA key must be P-256"
        );
        assert!(subject_key_id(&cert).is_some());
        assert!(ca.key_pem().expose_secret().contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn ca_material_reloads_from_pem_and_rejects_a_foreign_key() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let other = generate_tenant_ca("minami", "Minami City").unwrap();

        let reloaded = CaMaterial::from_pem(&ca.cert_pem, ca.key_pem().clone()).unwrap();
        assert_eq!(reloaded.cert_der, ca.cert_der);
        let issued = issue_client_certificate(&reloaded, "kita", "doctor7", 30).unwrap();
        assert_eq!(
            parse(&issued.cert_der).issuer().as_raw(),
            parse(&ca.cert_der).subject().as_raw()
        );

        assert!(matches!(
            CaMaterial::from_pem(&ca.cert_pem, other.key_pem().clone()),
            Err(PkiError::KeyMismatch)
        ));
        assert!(matches!(
            CaMaterial::from_pem(&ca.cert_pem, SecretString::from("not a key")),
            Err(PkiError::InvalidKey)
        ));
        assert!(matches!(
            CaMaterial::from_pem("garbage", ca.key_pem().clone()),
            Err(PkiError::InvalidCertificate(_))
        ));
        let (server_pem, server_key) = self_signed_server_certificate().unwrap();
        assert!(matches!(
            CaMaterial::from_pem(&server_pem, server_key),
            Err(PkiError::InvalidCertificate(_))
        ));
    }

    #[test]
    fn ca_key_seals_and_unseals_with_the_master_key() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let master = MasterKey::generate();
        let sealed = ca.seal_key(&master, b"tenant:kita").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("PRIVATE KEY"));
        let reopened =
            CaMaterial::from_sealed(&ca.cert_pem, &sealed, &master, b"tenant:kita").unwrap();
        assert_eq!(
            reopened.key_pem().expose_secret(),
            ca.key_pem().expose_secret()
        );
        assert!(matches!(
            CaMaterial::from_sealed(&ca.cert_pem, &sealed, &master, b"tenant:minami"),
            Err(PkiError::Decryption)
        ));
    }

    #[test]
    fn client_certificate_has_client_auth_names_serial_and_fingerprint() {
        let (ca, issued) = ca_and_client();
        let cert = parse(&issued.cert_der);
        let ca_cert = parse(&ca.cert_der);

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth && !eku.any && !eku.code_signing && !eku.email_protection);
        assert!(!eku.time_stamping && !eku.ocsp_signing && eku.other.is_empty());

        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert!(!ku.key_cert_sign() && !ku.crl_sign());
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);

        let info = inspect_certificate(&issued.cert_der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("nurse01"));
        assert_eq!(info.organization.as_deref(), Some("kita"));
        assert_eq!(info.issuer_common_name.as_deref(), Some("Renkei kita CA"));
        assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());

        // The stored serial must be what any parser reads back, with or without DER's 0x00 pad.
        assert_eq!(info.serial_hex, issued.serial_hex);
        let mut from_bigint = cert.tbs_certificate.serial.to_str_radix(16);
        if from_bigint.len() % 2 == 1 {
            from_bigint.insert(0, '0');
        }
        assert_eq!(issued.serial_hex, from_bigint);
        assert_eq!(
            normalize_serial_hex(&cert.raw_serial_as_string()).unwrap(),
            issued.serial_hex
        );
        assert!(issued.serial_hex.len() <= 32);
        assert!(
            cert.raw_serial().len() <= 16,
            "top bit cleared: no 0x00 pad"
        );
        assert!(!issued.serial_hex.starts_with("00"));
        assert_eq!(
            issued.serial_hex,
            issued.serial_hex.to_lowercase(),
            "serial hex must be lowercase"
        );

        assert_eq!(
            issued.fingerprint_sha256,
            hex::encode(Sha256::digest(&issued.cert_der))
        );
        assert_eq!(info.fingerprint_sha256, issued.fingerprint_sha256);
        assert_eq!(issued.fingerprint_sha256.len(), 64);

        let aki = cert
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
                _ => None,
            })
            .map(|id| id.0.to_vec());
        assert_eq!(aki, subject_key_id(&ca_cert));

        let now = Utc::now();
        assert!(issued.not_before <= now - TimeDelta::seconds(50));
        assert!(issued.not_before >= now - TimeDelta::seconds(120));
        assert_eq!(
            issued.not_after - issued.not_before,
            TimeDelta::days(365) + TimeDelta::seconds(CLOCK_SKEW_SECONDS)
        );
        assert_eq!(
            issued.not_after.timestamp(),
            cert.validity().not_after.timestamp()
        );
        assert_eq!(info.not_after, issued.not_after);

        let key = KeyPair::try_from(issued.key_der().expose_secret()).unwrap();
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );

        let (ok, text) = {
            let dir = TempDir::new();
            let leaf = dir.write("leaf.pem", issued.cert_pem.as_bytes());
            let root = dir.write("ca.pem", ca.cert_pem.as_bytes());
            openssl(&[
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                root.to_str().unwrap(),
                leaf.to_str().unwrap(),
            ])
        };
        assert!(ok, "openssl verify failed: {text}");
    }

    #[test]
    fn serials_are_random_and_distinct() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let a = issue_client_certificate(&ca, "kita", "a", 1).unwrap();
        let b = issue_client_certificate(&ca, "kita", "a", 1).unwrap();
        assert_ne!(a.serial_hex, b.serial_hex);
        assert_ne!(a.fingerprint_sha256, b.fingerprint_sha256);
    }

    #[test]
    fn serial_hex_is_canonical() {
        assert_eq!(serial_hex_from_bytes(&[0x00, 0x0a, 0xff]), "0aff");
        assert_eq!(serial_hex_from_bytes(&[0x00, 0x80]), "80");
        assert_eq!(serial_hex_from_bytes(&[0x00]), "00");
        assert_eq!(normalize_serial_hex("0A:FF").unwrap(), "0aff");
        assert_eq!(normalize_serial_hex("aff").unwrap(), "0aff");
        assert_eq!(normalize_serial_hex("000aff").unwrap(), "0aff");
        assert!(normalize_serial_hex("").is_err());
        assert!(normalize_serial_hex("xyz").is_err());
        assert!(normalize_serial_hex(&"ab".repeat(21)).is_err());
    }

    #[test]
    fn crl_lists_the_same_serial_hex_as_the_certificate() {
        let (ca, issued) = ca_and_client();
        let revoked_at = Utc::now() - TimeDelta::hours(1);
        let crl_der = generate_crl(
            &ca,
            &[RevokedEntry {
                // Upper case and colons, as an operator might paste it.
                serial_hex: issued
                    .serial_hex
                    .to_uppercase()
                    .as_bytes()
                    .chunks(2)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(":"),
                revoked_at,
                reason: Some(RevocationReason::KeyCompromise),
            }],
            42,
            7,
        )
        .unwrap();
        let (rest, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
        assert!(rest.is_empty());
        crl.verify_signature(parse(&ca.cert_der).public_key())
            .unwrap();
        assert_eq!(
            crl.issuer().as_raw(),
            parse(&ca.cert_der).subject().as_raw()
        );
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("42".into()));

        let entries: Vec<_> = crl.iter_revoked_certificates().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            serial_hex_from_bytes(entries[0].raw_serial()),
            issued.serial_hex
        );
        assert_eq!(
            entries[0].revocation_date.timestamp(),
            revoked_at.timestamp()
        );
        assert_eq!(
            entries[0].reason_code().map(|(_, r)| r.0),
            Some(1),
            "keyCompromise"
        );

        let next = crl.next_update().unwrap().timestamp() - crl.last_update().timestamp();
        assert_eq!(next, 7 * 86_400);
        assert!((crl.last_update().timestamp() - Utc::now().timestamp()).abs() < 60);
    }

    #[test]
    fn empty_crl_is_valid() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let crl_der = generate_crl(&ca, &[], 1, 1).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
        crl.verify_signature(parse(&ca.cert_der).public_key())
            .unwrap();
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        assert!(generate_crl(&ca, &[], 1, 0).is_err());

        let dir = TempDir::new();
        let crl_file = dir.write("empty.crl", &crl_der);
        let ca_file = dir.write("ca.pem", ca.cert_pem.as_bytes());
        let (ok, text) = openssl(&[
            "crl",
            "-inform",
            "DER",
            "-in",
            crl_file.to_str().unwrap(),
            "-CAfile",
            ca_file.to_str().unwrap(),
            "-noout",
        ]);
        assert!(ok && text.contains("verify OK"), "openssl crl: {text}");
    }

    #[test]
    fn rustls_accepts_a_valid_client_and_rejects_revoked_or_foreign_ones() {
        let (ca, issued) = ca_and_client();
        let other = issue_client_certificate(&ca, "kita", "helper02", 365).unwrap();

        let empty = client_verifier(&ca, generate_crl(&ca, &[], 1, 7).unwrap());
        verify(&empty, &issued).unwrap();
        verify(&empty, &other).unwrap();

        let revoked_crl = generate_crl(
            &ca,
            &[RevokedEntry {
                serial_hex: issued.serial_hex.clone(),
                revoked_at: Utc::now(),
                reason: None,
            }],
            2,
            7,
        )
        .unwrap();
        let revoking = client_verifier(&ca, revoked_crl);
        assert_eq!(
            verify(&revoking, &issued),
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        );
        verify(&revoking, &other).unwrap();

        // Another tenant's CA, and a CA with an identical name but a different key.
        let foreign_ca = generate_tenant_ca("minami", "Minami City").unwrap();
        let foreign = issue_client_certificate(&foreign_ca, "minami", "nurse01", 365).unwrap();
        assert!(verify(&empty, &foreign).is_err());
        let twin_ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let twin = issue_client_certificate(&twin_ca, "kita", "nurse01", 365).unwrap();
        assert!(verify(&empty, &twin).is_err());
    }

    #[test]
    fn modern_pkcs12_opens_with_openssl_and_python() {
        let (ca, issued) = ca_and_client();
        let p12 = build_pkcs12(
            &issued,
            &ca.cert_der,
            "nurse01",
            PASSWORD,
            Pkcs12Encoding::Modern,
        )
        .unwrap();
        let dir = TempDir::new();
        let file = dir.write("modern.p12", &p12);

        let (ok, text) = openssl_pkcs12(&file, PASSWORD, &["-info"]);
        assert!(ok, "openssl pkcs12 failed: {text}");
        assert_pkcs12_contents(&text, &ca, &issued);
        assert!(text.contains("MAC: sha256, Iteration 10000"), "{text}");
        assert!(
            text.contains(
                "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 10000, PRF hmacWithSHA256"
            ),
            "{text}"
        );
        assert!(!text.contains("DES") && !text.contains("sha1"), "{text}");

        assert_python_opens(&file, &ca, &issued);
        assert_p12_keystore_opens(&p12, &ca, &issued);
    }

    #[test]
    fn legacy_pkcs12_opens_with_openssl_and_python() {
        let (ca, issued) = ca_and_client();
        let p12 = build_pkcs12(
            &issued,
            &ca.cert_der,
            "nurse01",
            PASSWORD,
            Pkcs12Encoding::Legacy,
        )
        .unwrap();
        let dir = TempDir::new();
        let file = dir.write("legacy.p12", &p12);

        // 3DES is in OpenSSL 3's default provider, so no -legacy flag is needed.
        let (ok, text) = openssl_pkcs12(&file, PASSWORD, &["-info"]);
        assert!(ok, "openssl pkcs12 failed: {text}");
        assert_pkcs12_contents(&text, &ca, &issued);
        assert!(text.contains("MAC: sha1, Iteration 2048"), "{text}");
        assert!(
            text.contains("PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048"),
            "{text}"
        );
        assert!(
            text.contains("Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048"),
            "{text}"
        );
        assert!(!text.contains("AES") && !text.contains("PBES2"), "{text}");
        // Tools that still pass -legacy must keep working too.
        let (ok, text) = openssl_pkcs12(&file, PASSWORD, &["-legacy", "-noout"]);
        assert!(ok, "openssl pkcs12 -legacy failed: {text}");

        assert_python_opens(&file, &ca, &issued);
        assert_p12_keystore_opens(&p12, &ca, &issued);
    }

    fn assert_pkcs12_contents(text: &str, ca: &CaMaterial, issued: &IssuedCertificate) {
        assert!(text.contains("friendlyName: nurse01"), "{text}");
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"), "{text}");
        assert_eq!(
            text.matches("-----BEGIN CERTIFICATE-----").count(),
            2,
            "{text}"
        );
        assert!(text.contains("subject=CN = nurse01, O = kita"), "{text}");
        assert!(
            text.contains("subject=CN = Renkei kita CA, O = Kita City"),
            "{text}"
        );
        // The PEM bodies must be exactly our certificates.
        for pem in [&issued.cert_pem, &ca.cert_pem] {
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let dumped: String = text.lines().map(str::trim).collect();
            assert!(dumped.contains(&body), "certificate missing from bundle");
        }
    }

    fn assert_python_opens(file: &Path, ca: &CaMaterial, issued: &IssuedCertificate) {
        let (ok, text) = python_pkcs12(file, PASSWORD);
        assert!(ok, "python cryptography failed: {text}");
        assert!(text.contains("key secp256r1"), "{text}");
        assert!(
            text.contains(&format!("cert {}", issued.fingerprint_sha256)),
            "{text}"
        );
        assert!(
            text.contains(&format!("extra {}", ca.fingerprint_sha256())),
            "{text}"
        );
        let (ok, _) = python_pkcs12(file, "wrong-password");
        assert!(!ok, "python opened the bundle with a wrong password");
    }

    fn assert_p12_keystore_opens(p12: &[u8], ca: &CaMaterial, issued: &IssuedCertificate) {
        let store = p12_keystore::KeyStore::from_pkcs12(
            p12,
            PASSWORD,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "nurse01");
        assert_eq!(chain.key().as_der(), issued.key_der().expose_secret());
        let certs: Vec<_> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
        assert_eq!(certs, vec![issued.cert_der.clone(), ca.cert_der.clone()]);
    }

    #[test]
    fn pkcs12_with_a_wrong_password_fails_to_open() {
        let (ca, issued) = ca_and_client();
        let dir = TempDir::new();
        for encoding in [Pkcs12Encoding::Modern, Pkcs12Encoding::Legacy] {
            let p12 = build_pkcs12(&issued, &ca.cert_der, "nurse01", PASSWORD, encoding).unwrap();
            let file = dir.write(&format!("{encoding}.p12"), &p12);
            let (ok, text) = openssl_pkcs12(&file, "Wrong-pass-2345!x", &["-noout"]);
            assert!(!ok, "{encoding}: openssl accepted a wrong password");
            assert!(text.contains("Mac verify error"), "{text}");
            assert!(
                p12_keystore::KeyStore::from_pkcs12(
                    &p12,
                    "Wrong-pass-2345!x",
                    p12_keystore::Pkcs12ImportPolicy::Strict
                )
                .is_err()
            );
        }
    }

    #[test]
    fn pkcs12_rejects_a_ca_that_did_not_issue_the_certificate() {
        let (_, issued) = ca_and_client();
        let foreign = generate_tenant_ca("minami", "Minami City").unwrap();
        assert!(matches!(
            build_pkcs12(
                &issued,
                &foreign.cert_der,
                "nurse01",
                PASSWORD,
                Pkcs12Encoding::Modern
            ),
            Err(PkiError::InvalidCertificate(_))
        ));
    }

    #[test]
    fn pkcs12_encoding_parses_and_prints() {
        assert_eq!(
            "MODERN".parse::<Pkcs12Encoding>().unwrap(),
            Pkcs12Encoding::Modern
        );
        assert_eq!(
            "legacy".parse::<Pkcs12Encoding>().unwrap(),
            Pkcs12Encoding::Legacy
        );
        assert!("RC2".parse::<Pkcs12Encoding>().is_err());
        for e in [Pkcs12Encoding::Modern, Pkcs12Encoding::Legacy] {
            assert_eq!(e.as_str().parse::<Pkcs12Encoding>().unwrap(), e);
        }
        assert_eq!(
            "KEY_COMPROMISE".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
    }

    #[test]
    fn master_key_round_trips_and_detects_tampering() {
        let key = MasterKey::generate();
        let sealed = key.encrypt(b"secret CA key", b"tenant:1").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert_eq!(
            key.decrypt(&sealed, b"tenant:1").unwrap().expose_secret(),
            b"secret CA key"
        );
        // Random nonces: sealing twice never gives the same text.
        assert_ne!(sealed, key.encrypt(b"secret CA key", b"tenant:1").unwrap());

        assert!(matches!(
            key.decrypt(&sealed, b"tenant:2"),
            Err(PkiError::Decryption)
        ));
        let mut raw = BASE64.decode(&sealed[3..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        let tampered = format!("v1:{}", BASE64.encode(&raw));
        assert!(matches!(
            key.decrypt(&tampered, b"tenant:1"),
            Err(PkiError::Decryption)
        ));
        raw[last] ^= 0x01;
        raw[NONCE_LEN] ^= 0x80;
        let tampered = format!("v1:{}", BASE64.encode(&raw));
        assert!(key.decrypt(&tampered, b"tenant:1").is_err());
        assert!(matches!(
            key.decrypt(&sealed.replacen("v1:", "v2:", 1), b"tenant:1"),
            Err(PkiError::MalformedSealed)
        ));
        assert!(matches!(
            key.decrypt("v1:AAAA", b"tenant:1"),
            Err(PkiError::MalformedSealed)
        ));
        assert!(matches!(
            MasterKey::generate().decrypt(&sealed, b"tenant:1"),
            Err(PkiError::Decryption)
        ));

        let copy =
            MasterKey::from_base64(&format!("{}\n", key.to_base64().expose_secret())).unwrap();
        assert_eq!(
            copy.decrypt(&sealed, b"tenant:1").unwrap().expose_secret(),
            b"secret CA key"
        );
        let fixed = MasterKey::from_bytes([7u8; 32]);
        assert_eq!(
            fixed.to_base64().expose_secret(),
            BASE64.encode([7u8; 32]).as_str()
        );
        assert!(matches!(
            MasterKey::from_base64(&BASE64.encode([7u8; 31])),
            Err(PkiError::InvalidMasterKey)
        ));
        assert!(MasterKey::from_base64("!!!").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }

    #[test]
    fn random_passwords_have_length_and_every_class() {
        let mut seen = std::collections::HashSet::new();
        for len in [0, 8, 16, 17, 24, 64] {
            for _ in 0..50 {
                let password = random_password(len);
                assert_eq!(password.chars().count(), len.max(MIN_PASSWORD_LEN));
                assert!(password.bytes().any(|b| PASSWORD_UPPER.contains(&b)));
                assert!(password.bytes().any(|b| PASSWORD_LOWER.contains(&b)));
                assert!(password.bytes().any(|b| PASSWORD_DIGITS.contains(&b)));
                assert!(password.bytes().any(|b| PASSWORD_SYMBOLS.contains(&b)));
                assert!(
                    !password.contains(['0', 'O', 'o', '1', 'l', 'I']),
                    "ambiguous character in {password}"
                );
                assert!(seen.insert(password));
            }
        }
    }

    #[test]
    fn self_signed_server_certificate_covers_localhost() {
        let (cert_pem, key_pem) = self_signed_server_certificate().unwrap();
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let cert = parse(&der);
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|name| match name {
                GeneralName::DNSName(dns) => (*dns).to_owned(),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                    _ => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                },
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 365);
        let key = KeyPair::from_pem(key_pem.expose_secret()).unwrap();
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );

        // A client that pins this certificate can verify it for every advertised name.
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            verifier
                .verify_server_cert(
                    &der,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap();
        }
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let (ca, issued) = ca_and_client();
        let ca_debug = format!("{ca:?}");
        let issued_debug = format!("{issued:?}");
        assert!(ca_debug.contains("[redacted]") && issued_debug.contains("[redacted]"));
        let key_body: String = ca
            .key_pem()
            .expose_secret()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!ca_debug.contains("PRIVATE") && !ca_debug.contains(&key_body[..20]));
        let key_hex = hex::encode(issued.key_der().expose_secret());
        assert!(!issued_debug.contains(&key_hex[..32]));
        assert!(!issued_debug.contains("PRIVATE"));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        assert!(generate_tenant_ca("", "Kita City").is_err());
        assert!(generate_tenant_ca("kita", &"x".repeat(65)).is_err());
        assert!(issue_client_certificate(&ca, "kita", "", 30).is_err());
        assert!(issue_client_certificate(&ca, "kita", "bad\nname", 30).is_err());
        assert!(issue_client_certificate(&ca, "kita", "nurse", 0).is_err());
        assert!(
            issue_client_certificate(&ca, "kita", "nurse", MAX_CLIENT_VALIDITY_DAYS + 1).is_err()
        );
        let issued = issue_client_certificate(&ca, "kita", "nurse", 30).unwrap();
        assert!(build_pkcs12(&issued, &ca.cert_der, "nurse", "", Pkcs12Encoding::Modern).is_err());
        // Error text is safe to log: it names the field, never the value.
        let err =
            build_pkcs12(&issued, &ca.cert_der, "", PASSWORD, Pkcs12Encoding::Modern).unwrap_err();
        assert!(!err.to_string().contains(PASSWORD));
    }

    #[test]
    fn client_validity_stops_at_the_ca_expiry() {
        let ca = generate_tenant_ca("kita", "Kita City").unwrap();
        let issued =
            issue_client_certificate(&ca, "kita", "nurse01", MAX_CLIENT_VALIDITY_DAYS).unwrap();
        let ca_info = inspect_certificate(&ca.cert_der).unwrap();
        assert!(issued.not_after <= ca_info.not_after);
    }
}
