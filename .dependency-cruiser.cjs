// The layering of src/ (README, "Layout"), checked in `make test` (`make layers`): shared libraries
// at the bottom, the two proxies, the control plane and the CNI plugin side by side above them, the
// lab, installer and CLI on top. Every import points down, and nothing imports in a circle.
const SHARED = '^src/(api|bpf|hbone|identity|kube|pki|telemetry|util|xds)/';
const SERVICES = ['agent', 'waypoint', 'control', 'cni'];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'An import circle: the files cannot be understood, tested or moved one at a time.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'shared-points-down',
      severity: 'error',
      comment: 'A shared library imports only other shared libraries and packages.',
      from: { path: SHARED },
      to: { path: '^src/', pathNot: SHARED },
    },
    ...SERVICES.map((s) => ({
      name: `${s}-stands-alone`,
      severity: 'error',
      comment: `src/${s} builds on the shared libraries only, never on another service, the lab, the installer or the CLI.`,
      from: { path: `^src/${s}/` },
      to: { path: '^src/', pathNot: [SHARED, `^src/${s}/`] },
    })),
    {
      name: 'lab-only-from-the-top',
      severity: 'error',
      comment: 'Only the lab itself and the CLI import src/lab.',
      from: { path: '^src/', pathNot: '^src/(lab|cli)/' },
      to: { path: '^src/lab/' },
    },
    {
      name: 'lab-runs-services-as-processes',
      severity: 'error',
      comment: 'The lab starts the agent, control plane and CNI decision through the CLI and the shared contracts (src/api), as a cluster would, never by importing a service.',
      from: { path: '^src/lab/' },
      to: { path: '^src/(agent|waypoint|control|cni)/' },
    },
    {
      name: 'install-not-on-services',
      severity: 'error',
      comment: 'The installer renders manifests from shared contracts (src/api, src/kube), not from a service.',
      from: { path: '^src/install/' },
      to: { path: '^src/(agent|waypoint|control|cni|lab|cli)/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|lib|build)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'], extensions: ['.ts', '.js', '.json'] },
  },
};
