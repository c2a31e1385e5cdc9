// Kubernetes object names (DNS-1123), as the API server validates them: one definition for the
// YAML validator, the waypoint rendering, the control plane's model and the CA's token files.
export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A DNS-1123 label (namespaces, services): at most 63 characters. */
export const isDnsLabel = (s: string): boolean => s.length <= 63 && DNS1123_LABEL.test(s);

/** A DNS-1123 subdomain (most object names, service accounts): at most 253 characters. */
export const isDnsSubdomain = (s: string): boolean => s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
