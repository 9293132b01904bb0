// Parley shim: the subset of the libsrtp v3 API that mediasoup-worker uses,
// implemented on top of Debian's libsrtp 2.5 (libsrtp2-dev, <srtp2/srtp.h>).
//
// v3 differs from v2 where the worker is concerned in:
//  - srtp_policy_t is an opaque object built with srtp_policy_create() and
//    setters, with key and salt given separately (v2: a public struct holding
//    a pointer to key||salt);
//  - protect/unprotect take separate input and output buffers, size_t lengths
//    and the output buffer's capacity, and fail with
//    srtp_err_status_buffer_small instead of writing past it;
//  - srtp_remove_stream() is called srtp_stream_remove();
//  - two more error codes.
// Everything else the worker calls (srtp_init, srtp_shutdown, srtp_dealloc,
// srtp_install_event_handler, srtp_get_version_string, the profile helpers)
// is identical in v2 and comes straight from libsrtp2.
//
// The v3 functions are C++ overloads of the v2 C functions of the same name
// (different parameter lists), so this header is C++ only. Only the profiles
// the worker negotiates are accepted; MKI is not supported (the worker uses
// none). The master key copied into a policy is wiped (OPENSSL_cleanse) when
// the policy is destroyed; srtp_create() derives the session keys, which then
// live inside the libsrtp2 session until srtp_dealloc().
#ifndef PARLEY_SRTP3_SHIM_H
#define PARLEY_SRTP3_SHIM_H

#ifndef __cplusplus
#error "Parley's libsrtp3 shim is C++ only"
#endif

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <openssl/crypto.h> // OPENSSL_cleanse

// libsrtp2 uses the name srtp_policy_t for its policy struct; v3 uses it for
// the opaque policy handle. Rename the v2 struct while its header is read
// (type names only: the linked C symbols are unaffected).
#define srtp_policy_t parley_srtp2_policy_t
#include <srtp2/srtp.h>
#undef srtp_policy_t

static_assert(
  srtp_err_status_pkt_idx_adv == 27, "unexpected libsrtp2 error codes: check the v3 additions below");

// Error codes added by v3 (values unused by libsrtp2).
inline constexpr srtp_err_status_t srtp_err_status_buffer_small = static_cast<srtp_err_status_t>(28);
inline constexpr srtp_err_status_t srtp_err_status_cryptex_err  = static_cast<srtp_err_status_t>(29);

// What libsrtp2 may append: SRTP_MAX_TRAILER_LEN for SRTP, plus the 4-byte
// E-flag/index word for SRTCP (see the warnings in <srtp2/srtp.h>).
inline constexpr size_t parley_srtp_max_rtp_trailer  = SRTP_MAX_TRAILER_LEN;
inline constexpr size_t parley_srtp_max_rtcp_trailer = SRTP_MAX_TRAILER_LEN + 4;

struct parley_srtp3_policy
{
	parley_srtp2_policy_t v2;
	unsigned char key[SRTP_MAX_KEY_LEN]; // master key || master salt
	srtp_profile_t profile;
	bool hasProfile;
	bool hasKey;
};

typedef parley_srtp3_policy* srtp_policy_t;

/* Policy object. */

inline srtp_err_status_t srtp_policy_create(srtp_policy_t* policy)
{
	if (policy == nullptr)
		return srtp_err_status_bad_param;

	*policy = nullptr;

	auto* p = new (std::nothrow) parley_srtp3_policy;

	if (p == nullptr)
		return srtp_err_status_alloc_fail;

	std::memset(static_cast<void*>(p), 0, sizeof(*p));
	p->profile = srtp_profile_reserved;
	*policy    = p;

	return srtp_err_status_ok;
}

inline void srtp_policy_destroy(srtp_policy_t policy)
{
	if (policy == nullptr)
		return;

	// Wipe the key copy (and everything else) before giving the memory back.
	OPENSSL_cleanse(static_cast<void*>(policy), sizeof(*policy));
	delete policy;
}

inline srtp_err_status_t srtp_policy_set_ssrc(srtp_policy_t policy, srtp_ssrc_t ssrc)
{
	if (policy == nullptr)
		return srtp_err_status_bad_param;

	switch (ssrc.type)
	{
		case ssrc_specific:
		case ssrc_any_inbound:
		case ssrc_any_outbound:
			break;
		default:
			return srtp_err_status_bad_param;
	}

	policy->v2.ssrc = ssrc;

	return srtp_err_status_ok;
}

inline srtp_err_status_t srtp_policy_set_profile(srtp_policy_t policy, srtp_profile_t profile)
{
	if (policy == nullptr)
		return srtp_err_status_bad_param;

	// The key must be added after the profile (its lengths depend on it).
	if (policy->hasKey)
		return srtp_err_status_bad_param;

	switch (profile)
	{
		case srtp_profile_aes128_cm_sha1_80:
		case srtp_profile_aes128_cm_sha1_32:
		case srtp_profile_aead_aes_128_gcm:
		case srtp_profile_aead_aes_256_gcm:
			break;
		default:
			return srtp_err_status_bad_param;
	}

	srtp_err_status_t err = srtp_crypto_policy_set_from_profile_for_rtp(&policy->v2.rtp, profile);

	if (err != srtp_err_status_ok)
		return err;

	err = srtp_crypto_policy_set_from_profile_for_rtcp(&policy->v2.rtcp, profile);

	if (err != srtp_err_status_ok)
		return err;

	policy->profile    = profile;
	policy->hasProfile = true;

	return srtp_err_status_ok;
}

inline srtp_err_status_t srtp_policy_add_key(
  srtp_policy_t policy,
  const uint8_t* key,
  size_t keyLen,
  const uint8_t* salt,
  size_t saltLen,
  const uint8_t* mki,
  size_t mkiLen)
{
	if (policy == nullptr || key == nullptr || salt == nullptr)
		return srtp_err_status_bad_param;

	if (!policy->hasProfile)
		return srtp_err_status_bad_param;

	// A single master key without MKI is all the worker (and this shim) uses.
	if (policy->hasKey || mki != nullptr || mkiLen != 0)
		return srtp_err_status_bad_param;

	if (
	  keyLen != srtp_profile_get_master_key_length(policy->profile) ||
	  saltLen != srtp_profile_get_master_salt_length(policy->profile))
	{
		return srtp_err_status_bad_param;
	}

	if (
	  keyLen + saltLen > sizeof(policy->key) ||
	  keyLen + saltLen != static_cast<size_t>(policy->v2.rtp.cipher_key_len) ||
	  keyLen + saltLen != static_cast<size_t>(policy->v2.rtcp.cipher_key_len))
	{
		return srtp_err_status_bad_param;
	}

	std::memcpy(policy->key, key, keyLen);
	std::memcpy(policy->key + keyLen, salt, saltLen);

	policy->v2.key = policy->key;
	policy->hasKey = true;

	return srtp_err_status_ok;
}

inline srtp_err_status_t srtp_policy_set_allow_repeat_tx(srtp_policy_t policy, bool allow)
{
	if (policy == nullptr)
		return srtp_err_status_bad_param;

	policy->v2.allow_repeat_tx = allow ? 1 : 0;

	return srtp_err_status_ok;
}

inline srtp_err_status_t srtp_policy_set_window_size(srtp_policy_t policy, size_t windowSize)
{
	if (policy == nullptr)
		return srtp_err_status_bad_param;

	// Same bounds libsrtp2 enforces in srtp_create().
	if (windowSize < 64 || windowSize >= 0x8000)
		return srtp_err_status_bad_param;

	policy->v2.window_size = static_cast<unsigned long>(windowSize);

	return srtp_err_status_ok;
}

/* Session. */

inline srtp_err_status_t srtp_create(srtp_t* session, const srtp_policy_t policy)
{
	if (session == nullptr || policy == nullptr)
		return srtp_err_status_bad_param;

	if (!policy->hasProfile || !policy->hasKey || policy->v2.ssrc.type == ssrc_undefined)
		return srtp_err_status_bad_param;

	const parley_srtp2_policy_t* v2Policy = &policy->v2;

	return ::srtp_create(session, v2Policy);
}

inline srtp_err_status_t srtp_stream_remove(srtp_t session, uint32_t ssrc)
{
	if (session == nullptr)
		return srtp_err_status_bad_param;

	return ::srtp_remove_stream(session, ssrc);
}

/* Packets. */

namespace parley_srtp3
{
	using InPlaceFn = srtp_err_status_t (*)(srtp_t, void*, int*);

	// Copies `in` to `out` (capacity *outLen) and runs the in-place libsrtp2
	// function there; `trailer` is how much it may append.
	inline srtp_err_status_t Transform(
	  InPlaceFn fn,
	  srtp_t ctx,
	  const uint8_t* in,
	  size_t inLen,
	  uint8_t* out,
	  size_t* outLen,
	  size_t trailer)
	{
		if (ctx == nullptr || in == nullptr || out == nullptr || outLen == nullptr)
			return srtp_err_status_bad_param;

		if (inLen > static_cast<size_t>(INT_MAX) - trailer)
			return srtp_err_status_bad_param;

		if (*outLen < inLen + trailer)
			return srtp_err_status_buffer_small;

		if (out != in)
			std::memmove(out, in, inLen);

		int len = static_cast<int>(inLen);

		const srtp_err_status_t err = fn(ctx, out, &len);

		if (err != srtp_err_status_ok)
			return err;

		// libsrtp2 may only append up to `trailer` bytes (or shrink, when
		// unprotecting); anything else would mean it overran the buffer.
		if (len < 0 || static_cast<size_t>(len) > inLen + trailer)
			return srtp_err_status_fail;

		*outLen = static_cast<size_t>(len);

		return srtp_err_status_ok;
	}
} // namespace parley_srtp3

inline srtp_err_status_t srtp_protect(
  srtp_t ctx, const uint8_t* rtp, size_t rtpLen, uint8_t* srtp, size_t* srtpLen, size_t mkiIndex)
{
	if (mkiIndex != 0)
		return srtp_err_status_bad_mki;

	return parley_srtp3::Transform(
	  static_cast<parley_srtp3::InPlaceFn>(::srtp_protect),
	  ctx,
	  rtp,
	  rtpLen,
	  srtp,
	  srtpLen,
	  parley_srtp_max_rtp_trailer);
}

inline srtp_err_status_t srtp_unprotect(
  srtp_t ctx, const uint8_t* srtp, size_t srtpLen, uint8_t* rtp, size_t* rtpLen)
{
	return parley_srtp3::Transform(
	  static_cast<parley_srtp3::InPlaceFn>(::srtp_unprotect), ctx, srtp, srtpLen, rtp, rtpLen, 0);
}

inline srtp_err_status_t srtp_protect_rtcp(
  srtp_t ctx, const uint8_t* rtcp, size_t rtcpLen, uint8_t* srtcp, size_t* srtcpLen, size_t mkiIndex)
{
	if (mkiIndex != 0)
		return srtp_err_status_bad_mki;

	return parley_srtp3::Transform(
	  static_cast<parley_srtp3::InPlaceFn>(::srtp_protect_rtcp),
	  ctx,
	  rtcp,
	  rtcpLen,
	  srtcp,
	  srtcpLen,
	  parley_srtp_max_rtcp_trailer);
}

inline srtp_err_status_t srtp_unprotect_rtcp(
  srtp_t ctx, const uint8_t* srtcp, size_t srtcpLen, uint8_t* rtcp, size_t* rtcpLen)
{
	return parley_srtp3::Transform(
	  static_cast<parley_srtp3::InPlaceFn>(::srtp_unprotect_rtcp), ctx, srtcp, srtcpLen, rtcp, rtcpLen, 0);
}

#endif
