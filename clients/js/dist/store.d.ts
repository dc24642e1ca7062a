/** Where a client keeps the last `seq` it delivered, so that a restart resumes after it. */
export interface SeqStore {
    /** The last delivered `seq`, or `null` to start from the server's current one. */
    load(): number | null | Promise<number | null>;
    /** Called after every delivered personal event (and when the server moves the position on). */
    save(seq: number): void | Promise<void>;
}
/** Keeps the position for the life of the client object (the default). */
export declare class MemorySeqStore implements SeqStore {
    private seq;
    constructor(seq?: number | null);
    load(): number | null;
    save(seq: number): void;
}
/** Keeps the position in `localStorage` (or any Web Storage) under `key`: it survives a page reload. */
export declare class WebStorageSeqStore implements SeqStore {
    private readonly key;
    private readonly storage;
    constructor(key: string, storage?: Storage);
    load(): number | null;
    save(seq: number): void;
}
