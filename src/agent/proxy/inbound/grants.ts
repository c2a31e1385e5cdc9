// Which mesh state the relay's reused inbound decisions stand for (DialTarget.reuse in src/hbone).
// A decision is granted for reuse under the generation of the state it read; whenever the agent
// sees another state (an xDS update, or a decision that read a newer one), the generation moves on
// and every grant made before lapses, so no reused decision outlives the policy it came from.
import { grantGeneration, grantsChanged } from '../../../hbone/native/addon.ts';

export class StateGrants {
  private state?: object;

  /** The state decisions read now; a different one than before ends every grant. Returns the generation it stands for. */
  observe(state: object): number {
    if (state !== this.state) {
      this.state = state;
      grantsChanged();
    }
    return grantGeneration();
  }
}
