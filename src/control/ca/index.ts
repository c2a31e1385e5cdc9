// The mesh CA's public surface for the control plane.
export { StaticTokenAuthenticator, type NodeAuthenticator } from './authenticator.ts';
export { CertificateAuthority, CsrError, type CAOptions, type IssuedKeyPair, type ServerCertOptions } from './authority.ts';
export { CACERTS_FILES } from './plugged.ts';
export { caServerCredentials, registerCAService, type CACounters, type CAResult, type CAServiceOptions } from './service.ts';
