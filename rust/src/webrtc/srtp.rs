//! SRTP and SRTCP for what the engine sends itself (RFC 3711, RFC 7714).
//!
//! str0m runs each viewer's ICE and DTLS and reads its RTCP; the engine
//! writes the viewer's RTP and sender reports itself: one 12-byte header
//! and one AES-GCM seal per viewer-packet, the design of SRS. str0m does
//! not hand out the SRTP keys its DTLS exports, so they are captured on
//! their way: the crypto provider's DTLS factory is wrapped, and the
//! instance it makes while a viewer's `Rtc` is built (on the thread that
//! answers the offer, inside [`KeySlot::capture`]) copies the keying
//! material into that viewer's slot. The ciphers are the crypto
//! provider's (aws-lc-rs); only the SRTP framing is here.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256Gcm, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, CryptoError, CryptoProvider, Sha1HmacProvider, SrtpProvider,
};

// RFC 3711 §4.3.2 key derivation labels
const LABEL_RTP_KEY: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_KEY: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;
/// AES-CM output needs this much room past the data (aws-lc-rs works in
/// whole blocks).
const CTR_PADDING: usize = 15;
/// The E flag and SRTCP index after an SRTCP packet's payload.
const SRTCP_INDEX_LEN: usize = 4;
/// The fixed RTP header the engine writes (no CSRC, no extension).
pub const RTP_HEADER: usize = 12;

thread_local! {
    /// The slot of the viewer whose `Rtc` is being built on this thread.
    static CAPTURE: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// What one viewer's DTLS exported.
struct Exported {
    material: Vec<u8>,
    profile: SrtpProfile,
    /// We were the DTLS client: our keys are the left half.
    active: bool,
}

/// Where a viewer's DTLS instance leaves the SRTP keys it exports.
#[derive(Clone, Default)]
pub struct KeySlot(Arc<Mutex<Option<Exported>>>);

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // never the keys
        write!(f, "KeySlot(filled: {})", self.lock().is_some())
    }
}

impl KeySlot {
    fn lock(&self) -> MutexGuard<'_, Option<Exported>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `build`, which creates the viewer's `Rtc` with [`provider`]: the
    /// DTLS instance made meanwhile reports to this slot.
    pub fn capture<R>(&self, build: impl FnOnce() -> R) -> R {
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        let built = build();
        CAPTURE.with(|c| *c.borrow_mut() = None);
        built
    }

    /// Our sending context, once DTLS exported the keys (taken: the slot
    /// holds no secret afterwards).
    pub fn sender(&self, provider: &CryptoProvider) -> Option<SrtpSender> {
        let exported = self.lock().take()?;
        SrtpSender::new(provider, &exported)
    }
}

/// The crypto provider of `base` with its DTLS factory wrapped to capture
/// keys (see the module doc). Meant to be made once per process.
pub fn provider(base: CryptoProvider) -> CryptoProvider {
    let dtls: &'static CapturingDtls = Box::leak(Box::new(CapturingDtls {
        inner: base.dtls_provider,
    }));
    CryptoProvider {
        dtls_provider: dtls,
        ..base
    }
}

#[derive(Debug)]
struct CapturingDtls {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for CapturingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match CAPTURE.with(|c| c.borrow().clone()) {
            Some(slot) => Box::new(CapturingInstance { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

#[derive(Debug)]
struct CapturingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for CapturingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let output = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &output {
            *self.slot.lock() = Some(Exported {
                material: material.to_vec(),
                profile: *profile,
                active: self.inner.is_active(),
            });
        }
        output
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// One direction's session keys (RTP or RTCP) for the negotiated profile.
enum Protect {
    Cm {
        enc: Box<dyn Aes128CmSha1_80Cipher>,
        auth: [u8; Aes128CmSha1_80::HMAC_KEY_LEN],
        salt: [u8; Aes128CmSha1_80::SALT_LEN],
    },
    Gcm128 {
        enc: Box<dyn AeadAes128GcmCipher>,
        salt: [u8; AeadAes128Gcm::SALT_LEN],
    },
    Gcm256 {
        enc: Box<dyn AeadAes256GcmCipher>,
        salt: [u8; AeadAes256Gcm::SALT_LEN],
    },
}

/// The master key and salt of our direction, and the RFC 3711 key
/// derivation (AES-CM PRF, key derivation rate 0).
struct Master<'a> {
    key: &'a [u8],
    salt: &'a [u8],
    srtp: &'static dyn SrtpProvider,
}

impl Master<'_> {
    fn derive<const N: usize>(&self, label: u8) -> [u8; N] {
        let mut out = [0u8; N];
        let mut input = [0u8; 16];
        input[..self.salt.len()].copy_from_slice(self.salt);
        input[7] ^= label;
        let mut block = [0u8; 32];
        for (round, chunk) in out.chunks_mut(16).enumerate() {
            input[14..].copy_from_slice(&(round as u16).to_be_bytes());
            match self.key.len() {
                16 => self
                    .srtp
                    .srtp_aes_128_ecb_round(self.key, &input, &mut block),
                _ => self
                    .srtp
                    .srtp_aes_256_ecb_round(self.key, &input, &mut block),
            }
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        out
    }

    fn protect(&self, profile: SrtpProfile, rtcp: bool) -> Protect {
        let (key, auth, salt) = if rtcp {
            (LABEL_RTCP_KEY, LABEL_RTCP_AUTH, LABEL_RTCP_SALT)
        } else {
            (LABEL_RTP_KEY, LABEL_RTP_AUTH, LABEL_RTP_SALT)
        };
        match profile {
            SrtpProfile::AES128_CM_SHA1_80 => Protect::Cm {
                enc: self
                    .srtp
                    .aes_128_cm_sha1_80()
                    .create_cipher(self.derive(key), true),
                auth: self.derive(auth),
                salt: self.derive(salt),
            },
            SrtpProfile::AEAD_AES_128_GCM => Protect::Gcm128 {
                enc: self
                    .srtp
                    .aead_aes_128_gcm()
                    .create_cipher(self.derive(key), true),
                salt: self.derive(salt),
            },
            _ => Protect::Gcm256 {
                enc: self
                    .srtp
                    .aead_aes_256_gcm()
                    .create_cipher(self.derive(key), true),
                salt: self.derive(salt),
            },
        }
    }
}

/// Our sending SRTP context for one viewer: RTP for all its SSRCs (their
/// rollover counters are the callers'), and SRTCP with its own index.
pub struct SrtpSender {
    rtp: Protect,
    rtcp: Protect,
    srtcp_index: u32,
    hmac: &'static dyn Sha1HmacProvider,
}

impl SrtpSender {
    fn new(provider: &CryptoProvider, exported: &Exported) -> Option<SrtpSender> {
        let (key_len, salt_len) = match exported.profile {
            SrtpProfile::AES128_CM_SHA1_80 => (Aes128CmSha1_80::KEY_LEN, Aes128CmSha1_80::SALT_LEN),
            SrtpProfile::AEAD_AES_128_GCM => (AeadAes128Gcm::KEY_LEN, AeadAes128Gcm::SALT_LEN),
            SrtpProfile::AEAD_AES_256_GCM => (AeadAes256Gcm::KEY_LEN, AeadAes256Gcm::SALT_LEN),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        let m = &exported.material;
        if m.len() != 2 * (key_len + salt_len) {
            return None;
        }
        // [client key, server key, client salt, server salt]
        let (k, s) = if exported.active {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + salt_len)
        };
        let master = Master {
            key: &m[k..k + key_len],
            salt: &m[s..s + salt_len],
            srtp: provider.srtp_provider,
        };
        Some(SrtpSender {
            rtp: master.protect(exported.profile, false),
            rtcp: master.protect(exported.profile, true),
            srtcp_index: 0,
            hmac: provider.sha1_hmac_provider,
        })
    }

    /// Bytes SRTP adds to an RTP packet.
    pub fn rtp_overhead(&self) -> usize {
        match self.rtp {
            Protect::Cm { .. } => Aes128CmSha1_80::HMAC_TAG_LEN,
            _ => AeadAes128Gcm::TAG_LEN,
        }
    }

    /// Protect an RTP packet: `header` (12 bytes: its SSRC and sequence
    /// number are read from it) and `payload`, with the packet index's
    /// rollover counter `roc`. Written to `out` (cleared first).
    pub fn protect_rtp(
        &mut self,
        header: &[u8; RTP_HEADER],
        payload: &[u8],
        roc: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let seq = u16::from_be_bytes([header[2], header[3]]);
        let end = RTP_HEADER + payload.len();
        out.clear();
        match &mut self.rtp {
            Protect::Cm { enc, auth, salt } => {
                let index = (u64::from(roc) << 16) | u64::from(seq);
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                out.resize(end + CTR_PADDING.max(Aes128CmSha1_80::HMAC_TAG_LEN), 0);
                out[..RTP_HEADER].copy_from_slice(header);
                enc.encrypt(&iv, payload, &mut out[RTP_HEADER..])?;
                let hmac = |k: &[u8], p: &[&[u8]]| self.hmac.sha1_hmac(k, p);
                Aes128CmSha1_80::rtp_hmac(hmac, auth, out, index, end);
                out.truncate(end + Aes128CmSha1_80::HMAC_TAG_LEN);
            }
            Protect::Gcm128 { enc, salt } => {
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                out.resize(end + AeadAes128Gcm::TAG_LEN, 0);
                out[..RTP_HEADER].copy_from_slice(header);
                enc.encrypt(&iv, header, payload, &mut out[RTP_HEADER..])?;
            }
            Protect::Gcm256 { enc, salt } => {
                let iv = AeadAes256Gcm::rtp_iv(*salt, ssrc, roc, seq);
                out.resize(end + AeadAes256Gcm::TAG_LEN, 0);
                out[..RTP_HEADER].copy_from_slice(header);
                enc.encrypt(&iv, header, payload, &mut out[RTP_HEADER..])?;
            }
        }
        Ok(())
    }

    /// Protect a compound RTCP packet (the first packet's SSRC names the
    /// context). Returns the SRTCP packet.
    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if plain.len() < 8 {
            return Err(CryptoError::Other("RTCP packet too short".into()));
        }
        let index = self.srtcp_index;
        self.srtcp_index = (index + 1) & 0x7fff_ffff;
        let e_and_index = (0x8000_0000 | index).to_be_bytes();
        let ssrc = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let mut out = Vec::with_capacity(plain.len() + SRTCP_INDEX_LEN + 16 + CTR_PADDING);
        out.extend_from_slice(&plain[..8]);
        match &mut self.rtcp {
            Protect::Cm { enc, auth, salt } => {
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, u64::from(index));
                out.resize(plain.len() + CTR_PADDING, 0);
                enc.encrypt(&iv, &plain[8..], &mut out[8..])?;
                out.truncate(plain.len());
                out.extend_from_slice(&e_and_index);
                let tag = self.hmac.sha1_hmac(auth, &[&out]);
                out.extend_from_slice(&tag[..Aes128CmSha1_80::HMAC_TAG_LEN]);
            }
            Protect::Gcm128 { enc, salt } => {
                let iv = AeadAes128Gcm::rtcp_iv(*salt, ssrc, index);
                let aad = rtcp_aad(plain, e_and_index);
                out.resize(plain.len() + AeadAes128Gcm::TAG_LEN, 0);
                enc.encrypt(&iv, &aad, &plain[8..], &mut out[8..])?;
                out.extend_from_slice(&e_and_index);
            }
            Protect::Gcm256 { enc, salt } => {
                let iv = AeadAes256Gcm::rtcp_iv(*salt, ssrc, index);
                let aad = rtcp_aad(plain, e_and_index);
                out.resize(plain.len() + AeadAes256Gcm::TAG_LEN, 0);
                enc.encrypt(&iv, &aad, &plain[8..], &mut out[8..])?;
                out.extend_from_slice(&e_and_index);
            }
        }
        Ok(out)
    }
}

/// RFC 7714 §9.1: the first 8 bytes and the E flag with the SRTCP index.
fn rtcp_aad(plain: &[u8], e_and_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&plain[..8]);
    aad[8..].copy_from_slice(&e_and_index);
    aad
}
