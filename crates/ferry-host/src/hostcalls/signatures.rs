//! Envoy's `verify_signature` and `sign` foreign functions: RSA
//! (PKCS #1 v1.5) signatures over SHA-1 or SHA-2, and ECDSA on P-256
//! (SHA-256) and P-384 (SHA-384) with DER signatures, keys in DER or PEM,
//! with Envoy's protobuf arguments and results, on RustCrypto's `rsa`,
//! `p256` and `p384` crates.

use prost::Message as _;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

use ferry_abi::Status;

/// Envoy's `VerifySignatureArguments`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct VerifySignatureArguments {
    #[prost(string, tag = "1")]
    pub hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub text: Vec<u8>,
    #[prost(string, tag = "5")]
    pub public_key_pem: String,
}

/// Envoy's `VerifySignatureResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct VerifySignatureResult {
    #[prost(bool, tag = "1")]
    pub result: bool,
    #[prost(string, tag = "2")]
    pub error: String,
}

/// Envoy's `SignArguments`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SignArguments {
    #[prost(string, tag = "1")]
    pub hash_function: String,
    #[prost(bytes = "vec", tag = "2")]
    pub private_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub text: Vec<u8>,
    #[prost(string, tag = "4")]
    pub private_key_pem: String,
}

/// Envoy's `SignResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct SignResult {
    #[prost(bool, tag = "1")]
    pub result: bool,
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
    #[prost(string, tag = "3")]
    pub error: String,
}

/// The hash functions Envoy names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha224 => "sha224",
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }

    fn named(name: &str) -> Result<Hash, String> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "sha1" => Hash::Sha1,
            "sha224" => Hash::Sha224,
            "sha256" => Hash::Sha256,
            "sha384" => Hash::Sha384,
            "sha512" => Hash::Sha512,
            _ => return Err(format!("unknown hash function {name:?}")),
        })
    }
}

/// `verify_signature`: the result message says whether `signature` is
/// `text` signed by the key, or why it could not be checked. Arguments that
/// do not decode are a `SerializationFailure`.
pub(super) fn verify_signature(args: &[u8]) -> Result<Vec<u8>, Status> {
    let args = VerifySignatureArguments::decode(args).map_err(|_| Status::SerializationFailure)?;
    let (result, error) = match verify(&args) {
        Ok(()) => (true, String::new()),
        Err(error) => (false, error),
    };
    Ok(VerifySignatureResult { result, error }.encode_to_vec())
}

/// Reads a public key (SubjectPublicKeyInfo, DER or PEM) of type `K`.
fn public_key<K: DecodePublicKey>(args: &VerifySignatureArguments) -> Option<K> {
    if args.public_key_pem.is_empty() {
        K::from_public_key_der(&args.public_key).ok()
    } else {
        K::from_public_key_pem(&args.public_key_pem).ok()
    }
}

/// Reads a private key (PKCS #8, DER or PEM) of type `K`.
fn private_key<K: DecodePrivateKey>(args: &SignArguments) -> Option<K> {
    if args.private_key_pem.is_empty() {
        K::from_pkcs8_der(&args.private_key).ok()
    } else {
        K::from_pkcs8_pem(&args.private_key_pem).ok()
    }
}

fn verify(args: &VerifySignatureArguments) -> Result<(), String> {
    let hash = Hash::named(&args.hash_function)?;
    if let Some(key) = public_key::<p256::ecdsa::VerifyingKey>(args) {
        return verify_ec::<p256::ecdsa::DerSignature>(&key, hash, args, "P-256");
    }
    if let Some(key) = public_key::<p384::ecdsa::VerifyingKey>(args) {
        return verify_ec::<p384::ecdsa::DerSignature>(&key, hash, args, "P-384");
    }
    let key =
        public_key::<RsaPublicKey>(args).ok_or("the public key is not an RSA, P-256 or P-384 key in DER or PEM")?;
    let signature = Signature::try_from(args.signature.as_slice()).map_err(|e| format!("bad signature: {e}"))?;
    let text = args.text.as_slice();
    match hash {
        Hash::Sha1 => VerifyingKey::<sha1::Sha1>::new(key).verify(text, &signature),
        Hash::Sha224 => VerifyingKey::<sha2::Sha224>::new(key).verify(text, &signature),
        Hash::Sha256 => VerifyingKey::<sha2::Sha256>::new(key).verify(text, &signature),
        Hash::Sha384 => VerifyingKey::<sha2::Sha384>::new(key).verify(text, &signature),
        Hash::Sha512 => VerifyingKey::<sha2::Sha512>::new(key).verify(text, &signature),
    }
    .map_err(|_| "the signature does not match the text and key".to_owned())
}

/// ECDSA with the hash each curve is made for (SHA-256 for P-256,
/// SHA-384 for P-384); signatures DER-encoded, as OpenSSL makes them.
fn verify_ec<S>(key: &impl Verifier<S>, hash: Hash, args: &VerifySignatureArguments, curve: &str) -> Result<(), String>
where
    S: for<'a> TryFrom<&'a [u8]> + EcSignature,
{
    if !matches!((hash, S::CURVE_HASH), (Hash::Sha256, Hash::Sha256) | (Hash::Sha384, Hash::Sha384)) {
        return Err(format!("{curve} keys are used with {} here", S::CURVE_HASH.name()));
    }
    let signature = S::try_from(args.signature.as_slice()).map_err(|_| "bad signature: not DER".to_owned())?;
    key.verify(&args.text, &signature).map_err(|_| "the signature does not match the text and key".to_owned())
}

/// A DER ECDSA signature, and the hash its curve goes with.
trait EcSignature {
    const CURVE_HASH: Hash;
}

impl EcSignature for p256::ecdsa::DerSignature {
    const CURVE_HASH: Hash = Hash::Sha256;
}

impl EcSignature for p384::ecdsa::DerSignature {
    const CURVE_HASH: Hash = Hash::Sha384;
}

/// `sign`: the result message holds the signature of `text`, or why there
/// is none.
pub(super) fn sign(args: &[u8]) -> Result<Vec<u8>, Status> {
    let args = SignArguments::decode(args).map_err(|_| Status::SerializationFailure)?;
    let result = match signed(&args) {
        Ok(signature) => SignResult { result: true, signature, error: String::new() },
        Err(error) => SignResult { result: false, signature: Vec::new(), error },
    };
    Ok(result.encode_to_vec())
}

fn signed(args: &SignArguments) -> Result<Vec<u8>, String> {
    let hash = Hash::named(&args.hash_function)?;
    let ec_hash = |want: Hash, curve: &str| match (hash, want) {
        (Hash::Sha256, Hash::Sha256) | (Hash::Sha384, Hash::Sha384) => Ok(()),
        _ => Err(format!("{curve} keys are used with {} here", want.name())),
    };
    if let Some(key) = private_key::<p256::ecdsa::SigningKey>(args) {
        ec_hash(Hash::Sha256, "P-256")?;
        let signature: p256::ecdsa::Signature = key.try_sign(&args.text).map_err(|e| format!("signing failed: {e}"))?;
        return Ok(signature.to_der().to_bytes().to_vec());
    }
    if let Some(key) = private_key::<p384::ecdsa::SigningKey>(args) {
        ec_hash(Hash::Sha384, "P-384")?;
        let signature: p384::ecdsa::Signature = key.try_sign(&args.text).map_err(|e| format!("signing failed: {e}"))?;
        return Ok(signature.to_der().to_bytes().to_vec());
    }
    let key = private_key::<RsaPrivateKey>(args)
        .ok_or("the private key is not an RSA, P-256 or P-384 key in PKCS #8 DER or PEM")?;
    let text = args.text.as_slice();
    let signature = match hash {
        Hash::Sha1 => SigningKey::<sha1::Sha1>::new(key).try_sign(text),
        Hash::Sha224 => SigningKey::<sha2::Sha224>::new(key).try_sign(text),
        Hash::Sha256 => SigningKey::<sha2::Sha256>::new(key).try_sign(text),
        Hash::Sha384 => SigningKey::<sha2::Sha384>::new(key).try_sign(text),
        Hash::Sha512 => SigningKey::<sha2::Sha512>::new(key).try_sign(text),
    }
    .map_err(|e| format!("signing failed: {e}"))?;
    Ok(signature.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key made for these tests with `openssl genpkey -algorithm RSA`, and
    // `openssl dgst -sha256 -sign` of the text below: ferry must agree
    // with OpenSSL, which Envoy uses.
    const PRIVATE_KEY: &str = include_str!("../../testdata/rsa_key.pem");
    const PUBLIC_KEY: &str = include_str!("../../testdata/rsa_pub.pem");
    const OPENSSL_SIGNATURE: &[u8] = include_bytes!("../../testdata/rsa_sha256_signature.bin");
    const TEXT: &[u8] = b"hello from openssl";

    fn verified(args: VerifySignatureArguments) -> VerifySignatureResult {
        VerifySignatureResult::decode(verify_signature(&args.encode_to_vec()).unwrap().as_slice()).unwrap()
    }

    fn verify_args(signature: &[u8], text: &[u8], hash: &str) -> VerifySignatureArguments {
        VerifySignatureArguments {
            hash_function: hash.into(),
            public_key_pem: PUBLIC_KEY.into(),
            signature: signature.to_vec(),
            text: text.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn an_openssl_signature_verifies_and_a_changed_text_does_not() {
        assert_eq!(
            verified(verify_args(OPENSSL_SIGNATURE, TEXT, "sha256")),
            VerifySignatureResult { result: true, error: String::new() }
        );
        let changed = verified(verify_args(OPENSSL_SIGNATURE, b"hello from someone else", "sha256"));
        assert!(!changed.result && changed.error.contains("does not match"), "{changed:?}");
        let wrong_hash = verified(verify_args(OPENSSL_SIGNATURE, TEXT, "sha512"));
        assert!(!wrong_hash.result);
        let unknown = verified(verify_args(OPENSSL_SIGNATURE, TEXT, "md5"));
        assert!(unknown.error.contains("unknown hash function"), "{unknown:?}");
        // The same key as DER.
        let der = rsa::pkcs8::DecodePublicKey::from_public_key_pem(PUBLIC_KEY)
            .map(|key: RsaPublicKey| rsa::pkcs8::EncodePublicKey::to_public_key_der(&key).unwrap().to_vec())
            .unwrap();
        let args = VerifySignatureArguments {
            public_key: der,
            public_key_pem: String::new(),
            ..verify_args(OPENSSL_SIGNATURE, TEXT, "sha256")
        };
        assert!(verified(args).result);
        assert_eq!(verify_signature(b"\xff\xff"), Err(Status::SerializationFailure));
    }

    #[test]
    fn signing_gives_what_openssl_gives() {
        let args = SignArguments {
            hash_function: "sha256".into(),
            private_key_pem: PRIVATE_KEY.into(),
            text: TEXT.to_vec(),
            ..Default::default()
        };
        let result = SignResult::decode(sign(&args.encode_to_vec()).unwrap().as_slice()).unwrap();
        assert!(result.result, "{}", result.error);
        // PKCS #1 v1.5 is deterministic: the same bytes as OpenSSL's.
        assert_eq!(result.signature, OPENSSL_SIGNATURE);
        let bad = SignArguments { private_key_pem: "not a key".into(), ..args };
        let result = SignResult::decode(sign(&bad.encode_to_vec()).unwrap().as_slice()).unwrap();
        assert!(!result.result && result.error.contains("private key"), "{result:?}");
    }

    // An EC key made with `openssl genpkey -algorithm EC -pkeyopt
    // ec_paramgen_curve:P-256`, and `openssl dgst -sha256 -sign` of TEXT.
    const EC_PRIVATE_KEY: &str = include_str!("../../testdata/ec_p256_key.pem");
    const EC_PUBLIC_KEY: &str = include_str!("../../testdata/ec_p256_pub.pem");
    const EC_OPENSSL_SIGNATURE: &[u8] = include_bytes!("../../testdata/ec_p256_sha256_signature.bin");

    #[test]
    fn p256_signatures_from_openssl_verify_and_ours_verify_too() {
        let ec = |signature: &[u8], text: &[u8], hash: &str| VerifySignatureArguments {
            public_key_pem: EC_PUBLIC_KEY.into(),
            ..verify_args(signature, text, hash)
        };
        assert!(verified(ec(EC_OPENSSL_SIGNATURE, TEXT, "sha256")).result);
        assert!(!verified(ec(EC_OPENSSL_SIGNATURE, b"other text", "sha256")).result);
        let other_hash = verified(ec(EC_OPENSSL_SIGNATURE, TEXT, "sha512"));
        assert!(!other_hash.result && other_hash.error.contains("P-256"), "{other_hash:?}");
        let args = SignArguments {
            hash_function: "sha256".into(),
            private_key_pem: EC_PRIVATE_KEY.into(),
            text: TEXT.to_vec(),
            ..Default::default()
        };
        let signed = SignResult::decode(sign(&args.encode_to_vec()).unwrap().as_slice()).unwrap();
        assert!(signed.result, "{signed:?}");
        assert_eq!(signed.signature[0], 0x30, "a DER SEQUENCE, as OpenSSL's");
        assert!(verified(ec(&signed.signature, TEXT, "sha256")).result);
    }
}
