/**
 * A dataset a generator makes: `count` cases with ids caseId(0..count−1), every one labelled, each made
 * from its index on load. The synthetic dataset plugins share it (plugins never import each other); one
 * with more to say (a context report) extends it.
 */
import type { Dataset, SegmentationTask, SpacingUnit, Volume } from '../types.js';

export class GeneratedDataset implements Dataset {
  readonly channels: string[];
  private readonly ids: string[];

  constructor(
    readonly name: string,
    readonly task: SegmentationTask,
    channels: readonly string[],
    private readonly count: number,
    caseId: (index: number) => string,
    private readonly generate: (index: number) => Volume | Promise<Volume>,
    /** The unit of the generated volumes' spacing (Dataset.spacingUnit). */
    readonly spacingUnit: SpacingUnit = 'mm',
  ) {
    this.channels = [...channels];
    this.ids = Array.from({ length: count }, (_, i) => caseId(i));
  }

  caseIds(): string[] {
    return this.ids.slice();
  }

  labelledCaseIds(): string[] {
    return this.ids.slice();
  }

  async load(id: string): Promise<Volume> {
    return this.generate(this.index(id));
  }

  /** A case's index; an id the generator did not make is an error that says how many cases there are. */
  protected index(id: string): number {
    const index = this.ids.indexOf(id);
    if (index < 0) {
      throw new Error(
        `${this.name}: no case ${JSON.stringify(id)}; this dataset has ${this.count} cases (${this.ids[0]} … ${this.ids[this.count - 1]}); raise dataset.settings.cases for more`,
      );
    }
    return index;
  }
}
