/** Where a client keeps the last `seq` it delivered, so that a restart resumes after it. */

export interface SeqStore {
  /** The last delivered `seq`, or `null` to start from the server's current one. */
  load(): number | null | Promise<number | null>;
  /** Called after every delivered personal event (and when the server moves the position on). */
  save(seq: number): void | Promise<void>;
}

/** Keeps the position for the life of the client object (the default). */
export class MemorySeqStore implements SeqStore {
  constructor(private seq: number | null = null) {}
  load(): number | null {
    return this.seq;
  }
  save(seq: number): void {
    this.seq = seq;
  }
}

/** Keeps the position in `localStorage` (or any Web Storage) under `key`: it survives a page reload. */
export class WebStorageSeqStore implements SeqStore {
  private readonly storage: Storage;
  constructor(
    private readonly key: string,
    storage?: Storage,
  ) {
    const found = storage ?? (globalThis as { localStorage?: Storage }).localStorage;
    if (!found) throw new Error("WebStorageSeqStore needs a Storage (localStorage is not available here)");
    this.storage = found;
  }
  load(): number | null {
    const raw = this.storage.getItem(this.key);
    const seq = raw === null ? NaN : Number(raw);
    return Number.isInteger(seq) && seq >= 0 ? seq : null;
  }
  save(seq: number): void {
    this.storage.setItem(this.key, String(seq));
  }
}
