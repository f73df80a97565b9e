//! Pure translation of a generated compose service into an engine [`ContainerSpec`].
