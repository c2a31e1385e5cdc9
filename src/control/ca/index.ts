// The mesh CA's public surface for the control plane.
export { StaticTokenAuthenticator, StaticWorkloadTokenAuthenticator, parseServiceAccountRef, type NodeAuthenticator, type ServiceAccountRef, type WorkloadAuthenticator } from './authenticator.ts';
export { CertificateAuthority, CsrError, CsrIdentityError, type CAOptions, type SignOptions, type IssuedKeyPair, type ServerCertOptions } from './authority.ts';
export { CACERTS_FILES } from './plugged.ts';
export { caServerCredentials, registerCAService, type CACounters, type CAResult, type CAServiceOptions } from './service.ts';
