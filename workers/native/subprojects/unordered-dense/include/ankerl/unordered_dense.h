// Parley shim for <ankerl/unordered_dense.h> (martinus/unordered_dense 4.x),
// which no Debian package provides. mediasoup-worker only uses
// ankerl::unordered_dense::{map, set, hash} through the std-compatible subset
// of their API, so they are aliases of std::unordered_map / std::unordered_set
// with the same template parameter order, and hash<T> is std::hash<T>.
//
// Differences from the real library that the worker does not rely on:
// iteration order, the vector-backed extras (values(), extract(), nth()),
// and hash quality (std::hash is the identity for integers; std::unordered_*
// copes with that by using prime bucket counts).
#ifndef PARLEY_ANKERL_UNORDERED_DENSE_SHIM_H
#define PARLEY_ANKERL_UNORDERED_DENSE_SHIM_H

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#define ANKERL_UNORDERED_DENSE_VERSION_MAJOR 4
#define ANKERL_UNORDERED_DENSE_VERSION_MINOR 8
#define ANKERL_UNORDERED_DENSE_VERSION_PATCH 1

namespace ankerl::unordered_dense
{
	template<typename T, typename Enable = void>
	struct hash : std::hash<T>
	{
	};

	template<
	  class Key,
	  class T,
	  class Hash      = hash<Key>,
	  class KeyEqual  = std::equal_to<Key>,
	  class Allocator = std::allocator<std::pair<const Key, T>>>
	using map = std::unordered_map<Key, T, Hash, KeyEqual, Allocator>;

	template<
	  class Key,
	  class Hash      = hash<Key>,
	  class KeyEqual  = std::equal_to<Key>,
	  class Allocator = std::allocator<Key>>
	using set = std::unordered_set<Key, Hash, KeyEqual, Allocator>;
} // namespace ankerl::unordered_dense

#endif
