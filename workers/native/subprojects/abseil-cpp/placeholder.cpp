// Parley shim: object for the `link_whole` placeholder library (see meson.build).
// The real library comes from the Debian package through the dependency object.
extern const char parley_abseil_cpp_shim_placeholder;
