/**
 * UndoStack: the undo of a multi-step set-up. Each step, once done, pushes how to undo it; if a
 * later step fails, unwind() runs the undos in reverse order (each one's failure is logged and
 * the rest still run); once the whole set-up has succeeded, dismiss() drops them (the owner's
 * normal teardown takes over). `afterStep` (tests) runs after each push: a throw from it fails
 * the set-up at exactly that point.
 */
export class UndoStack {
  private readonly undos: { step: string; undo: () => unknown }[] = [];

  constructor(private readonly log: (m: string) => void, private readonly afterStep?: (step: string) => void | Promise<void>) {}

  /** Records that `step` is done and how to undo it. */
  async push(step: string, undo: () => unknown): Promise<void> {
    this.undos.push({ step, undo });
    await this.afterStep?.(step);
  }

  /** Undoes every recorded step, last first. */
  async unwind(): Promise<void> {
    for (let u = this.undos.pop(); u; u = this.undos.pop()) {
      try {
        await u.undo();
      } catch (e) {
        this.log(`cleanup after a failed mount: ${u.step}: ${(e as Error)?.message ?? String(e)}`);
      }
    }
  }

  /** The set-up succeeded: nothing to undo. */
  dismiss(): void { this.undos.length = 0; }
}
