# rewind test guest: a tiny, deterministic x86 real-mode program that keeps
# state in RAM and on two disks and checks that they agree.
#
# Built by tests/guest/CMakeLists.txt with `as --32` and `ld -m elf_i386
# -T guest.ld --oformat binary` into rewind_test_guest.img: a raw flat image,
# a whole number of 512-byte sectors, to be written at LBA 0 of disk 0.  No
# C preprocessor is involved (the file is fed to `as` as it is).
# See tests/guest/README.md.
#
# Machine: any PC BIOS with int 13h extensions (SeaBIOS under
# qemu-system-x86_64 -machine pc, TCG is enough), booting from disk 0;
# disk 0 is BIOS drive 0x80, disk 1 is drive 0x81 (two IDE disks); COM1 at
# 0x3f8, written directly (115200 8N1, no interrupts).  Optional: COM2 at
# 0x2f8 (the heartbeat, below) and QEMU's ISA pvpanic device at port 0x505
# (-device pvpanic); the guest runs the same without them.
#
# What it checks.  The guest holds a counter C in RAM and the same counter in
# a "record" sector on each disk.  Every iteration of its loop it reads both
# records; both must equal C.  It then sets C = C+1 and writes C to disk 0's
# record, then (a separate write) to disk 1's.  So whenever the loop reads,
# RAM and both disks agree -- unless RAM and disks come from different
# instants (a restore of RAM from one moment and disks from another, a lost
# write, a disk changed behind the guest's back).  A stop between the two
# writes is harmless when RAM/CPU and disks are saved and restored together:
# the restored CPU resumes with the second write.  Any disagreement is a
# MISMATCH: counted in the status sector on disk 0 (written at once) and
# printed on the serial port; the guest then carries on from its RAM value
# (the next writes make the disks agree again).
# A record that is not valid at all (magic, inverse or disk index wrong) is
# not a disagreement but a corrupted disk: the guest PANICs -- prints PANIC,
# signals the panic to the host through pvpanic (writes 1, PVPANIC_PANICKED,
# to port 0x505; QEMU then reports GUEST_PANICKED on QMP) and stops for good
# (cli; hlt), as a kernel does.  It writes nothing more to its disks, so they
# stay as it found them.  A record whose magic is "RWGHANG!" is the hang
# marker: the guest prints HANG and stops for good with interrupts off,
# without pvpanic -- a hung guest that QEMU still reports as running.
# Heartbeat: when COM2 is present (its scratch register holds what is
# written), every iteration the guest drains COM2's receive buffer (at most
# 64 bytes) and answers every "\n" it received with '{"return": {}}\n' on
# COM2: the answer of the QEMU guest agent to {"execute":"guest-ping"}.  A
# panicked or hung guest no longer answers.
# What it cannot see: a change of the disks made while it is stopped between
# its read of disk 1's record and its write of disk 0's is overwritten before
# it is ever read -- harmless to the guest, which never saw it.  The loop
# keeps that window to a few instructions; the guest spends most of its time
# halted in a BIOS wait (int 15h AH=86h) at the end of the loop, where a stop
# is a "safe point": the next disk access is the read of disk 0's record.
# The tests stop there when they inject a difference on purpose
# (tests/vmstate/guest_util.h, Qemu::StopAtSafePoint).
# It also keeps a 64 KiB RAM buffer (0x20000-0x2ffff, 16 pages of 4 KiB)
# filled with a pattern derived from C and page number; every iteration it
# checks the buffer against C (RAMBAD when it disagrees: RAM pages from
# different instants) and refills it for C+1, so every iteration dirties 16
# pages for live migration.
#
# Disk layout (LBA = 512-byte sector):
#   disk 0, LBA 0          boot sector (this file's .boot section, 0x55aa)
#   disk 0, LBA 1..k       the rest of the program (k = _load_sectors <= 62)
#   disk 0 and 1, LBA 64   record:  0 "RWGUEST1"  8 u32 counter
#                                   12 u32 ~counter  16 u32 disk index (0, 1)
#                                   rest zero
#   disk 0, LBA 65         status:  0 "RWGSTAT1"  8 u32 mismatches
#                                   12 u32 RAM counter at the last mismatch
#                                   16 u32 disk 0 value at the last mismatch
#                                   20 u32 disk 1 value at the last mismatch
#                                   24 u32 boots   28 u32 RAM-pattern errors
#                                   32 u32 C at the last RAM-pattern error
#                                   rest zero
#   All numbers little-endian.  A record that is not valid (magic, inverse
#   or disk index wrong) makes the guest panic (PANIC, above); one whose
#   magic is "RWGHANG!" (the rest does not matter) makes it hang (HANG).
#
# Boot: C = 0, the RAM buffer is filled for C = 0, both records are written
# with 0 (a boot is a fresh start; it never adopts a counter from disk); the
# status sector is read (initialised when its magic is wrong), boots += 1,
# written back.  Everything else is kept.
#
# Serial lines (each ends in "\r\n", all numbers decimal):
#   BOOT boots=<n>
#   TICK C=<C> mm=<mismatches> ram=<ram errors>     every 16 iterations, C a
#                                                   multiple of 16, after the
#                                                   writes of C
#   MISMATCH ram=<C> d0=<disk 0> d1=<disk 1> mm=<mismatches after this one>
#                                                   both records valid
#   PANIC drive=<128|129> lba=<n>                   an invalid record; then
#                                                   pvpanic and cli; hlt
#   HANG drive=<128|129> lba=<n>                    the hang marker; then
#                                                   cli and a halt for good
#   RAMBAD C=<C> page=<first bad page> ram=<ram errors after this one>
#   DISKERR op=<66 read|67 write> drive=<128|129> lba=<n> ah=<BIOS status>
#                                                   then the guest halts
#
# Memory (real mode, all segment registers 0 except ES during buffer work):
#   0x0500  disk address packet for int 13h AH=42h/43h
#   0x0520  variables: C (u32), d0 (u32), d1 (u32), COM2 present (u32)
#   0x1000  sector buffers: 0x1000 read disk 0, 0x1200 read disk 1,
#           0x1400 status, 0x1600 record to write
#   0x7c00  this program; the stack grows down from 0x7c00
#   0x20000 the 64 KiB pattern buffer

        .code16

        .set REC_LBA, 64
        .set STATUS_LBA, 65
        .set DRIVE0, 0x80
        .set DRIVE1, 0x81

        .set DAP, 0x0500
        .set VAR_C, 0x0520
        .set VAR_D0, 0x0524
        .set VAR_D1, 0x0528
        .set VAR_COM2, 0x052c
        .set BUF_D0, 0x1000
        .set BUF_D1, 0x1200
        .set BUF_STAT, 0x1400
        .set BUF_WR, 0x1600

        # status sector fields
        .set ST_MM, BUF_STAT + 8
        .set ST_LAST_C, BUF_STAT + 12
        .set ST_LAST_D0, BUF_STAT + 16
        .set ST_LAST_D1, BUF_STAT + 20
        .set ST_BOOTS, BUF_STAT + 24
        .set ST_RAMERR, BUF_STAT + 28
        .set ST_RAMERR_C, BUF_STAT + 32

        .set PATTERN_SEG, 0x2000
        .set PATTERN_PAGES, 16
        .set TICK_MASK, 15
        # Pause per iteration, microseconds (0: none), with the BIOS wait
        # (int 15h AH=86h; SeaBIOS halts until its RTC timer fires, so QEMU
        # idles meanwhile).  Keeps the journal growth of the two disks
        # modest; see README.md for the measured rate.
        .set DELAY_US, 2000

        .set COM1, 0x3f8
        .set COM2, 0x2f8
        # Bytes read from COM2 per iteration, at most (QEMU holds back what
        # does not fit in the 16-byte receive FIFO, so nothing is lost).
        .set COM2_DRAIN_MAX, 64
        # QEMU's ISA pvpanic device: port, and the "guest panicked" bit.
        .set PVPANIC_PORT, 0x505
        .set PVPANIC_PANICKED, 1
        # The hang marker's magic "RWGHANG!", as two little-endian u32.
        .set HANG_MAGIC_LO, 0x48475752
        .set HANG_MAGIC_HI, 0x21474e41

# ======================================================== boot sector (512)
        .section .boot, "ax"
        .globl _start
_start:
        ljmp    $0, $boot_cs0
boot_cs0:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        sti
        cld
        call    serial_init
        # Load sectors 1.._load_sectors of the boot disk to 0x7e00.
        movw    $_load_sectors, %cx
        movl    $1, %eax
        movw    $0x7e00, %bx
        movb    $DRIVE0, %dl
        movb    $0x42, %dh
        call    disk_io
        jmp     main

# serial_init: COM1 at 115200 8N1, FIFO on, no interrupts.
serial_init:
        movw    $COM1+1, %dx            # IER: no interrupts
        xorb    %al, %al
        outb    %al, %dx
        movw    $COM1+3, %dx            # LCR: DLAB
        movb    $0x80, %al
        outb    %al, %dx
        movw    $COM1, %dx              # divisor 1: 115200
        movb    $1, %al
        outb    %al, %dx
        movw    $COM1+1, %dx
        xorb    %al, %al
        outb    %al, %dx
        movw    $COM1+3, %dx            # 8N1
        movb    $3, %al
        outb    %al, %dx
        movw    $COM1+2, %dx            # FIFO on, cleared
        movb    $0xc7, %al
        outb    %al, %dx
        movw    $COM1+4, %dx            # DTR, RTS; OUT2 off: no IRQ
        movb    $3, %al
        outb    %al, %dx
        ret

# putc: writes AL to COM1 (waits for the transmitter).  Keeps all registers.
putc:
        pushw   %dx
        pushw   %ax
        movw    $COM1+5, %dx
1:      inb     %dx, %al
        testb   $0x20, %al
        jz      1b
        popw    %ax
        movw    $COM1, %dx
        outb    %al, %dx
        popw    %dx
        ret

# puts: writes the NUL-terminated string at DS:SI.  Keeps all registers.
puts:
        pushw   %si
        pushw   %ax
1:      lodsb
        testb   %al, %al
        jz      2f
        call    putc
        jmp     1b
2:      popw    %ax
        popw    %si
        ret

# print_dec: writes EAX in decimal.  Keeps all registers.
print_dec:
        pushal
        movl    $10, %ecx
        xorw    %bx, %bx
1:      xorl    %edx, %edx
        divl    %ecx
        pushw   %dx
        incw    %bx
        testl   %eax, %eax
        jnz     1b
2:      popw    %ax
        addb    $'0', %al
        call    putc
        decw    %bx
        jnz     2b
        popal
        ret

# disk_io: one int 13h extended call.  DH = 0x42 (read) or 0x43 (write),
# DL = drive, EAX = LBA, BX = buffer (segment 0), CX = sector count.
# Keeps all registers.  On failure it prints DISKERR and halts for good.
disk_io:
        pushal
        movw    $DAP, %si
        movw    $0x0010, (%si)          # packet size 16, reserved 0
        movw    %cx, 2(%si)             # sectors
        movw    %bx, 4(%si)             # buffer offset
        movw    $0, 6(%si)              # buffer segment
        movl    %eax, 8(%si)            # LBA, low 32 bits
        movl    $0, 12(%si)             # LBA, high 32 bits
        movb    %dh, %ah
        xorb    %al, %al                # AH=43h: AL=0, write without verify
        pushw   %dx
        int     $0x13
        popw    %dx
        jc      disk_fail
        popal
        ret
disk_fail:
        # AH = BIOS status, DH = operation, DL = drive; the LBA is in the DAP.
        movw    $msg_diskerr, %si
        call    puts
        movzbl  %ah, %ecx
        movzbl  %dh, %eax
        call    print_dec
        movw    $msg_drive, %si
        call    puts
        movzbl  %dl, %eax
        call    print_dec
        movw    $msg_lba, %si
        call    puts
        movl    DAP+8, %eax
        call    print_dec
        movw    $msg_ah, %si
        call    puts
        movl    %ecx, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts
        cli
1:      hlt
        jmp     1b

msg_diskerr:    .asciz "DISKERR op="
msg_drive:      .asciz " drive="
msg_lba:        .asciz " lba="
msg_ah:         .asciz " ah="
msg_crlf:       .asciz "\r\n"

        .org    510
        .byte   0x55, 0xaa

# ============================================================ the program
        .text

main:
        # A fresh start: C = 0 in RAM, pattern for 0, records 0 on both disks.
        movl    $0, VAR_C
        call    com2_init
        call    fill_pattern
        call    write_records
        # Status: keep what is there (or initialise it); one more boot.
        call    read_status
        incl    ST_BOOTS
        call    write_status
        movw    $msg_boot, %si
        call    puts
        movl    ST_BOOTS, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts

main_loop:
        # The RAM buffer must hold the pattern of C.  (Checked first, so the
        # reads of the records come right before the writes: see below.)
        call    check_pattern
        jz      1f
        call    report_rambad
1:
        # Both records must equal C.
        movb    $DRIVE0, %dl
        movw    $BUF_D0, %bx
        xorw    %di, %di
        call    read_record
        movl    %eax, VAR_D0
        movb    $DRIVE1, %dl
        movw    $BUF_D1, %bx
        movw    $1, %di
        call    read_record
        movl    %eax, VAR_D1
        movl    VAR_C, %eax
        cmpl    VAR_D0, %eax
        jne     2f
        cmpl    VAR_D1, %eax
        je      3f
2:      call    report_mismatch
3:
        # Next counter: RAM, then disk 0, then disk 1, then the buffer.  Only
        # between the read of disk 1's record above and the write of disk 0's
        # here does a change of the disks go unseen (it is overwritten before
        # the guest ever reads it); this window is kept to a few
        # instructions.
        incl    VAR_C
        call    write_records
        call    fill_pattern

        movl    VAR_C, %eax
        testl   $TICK_MASK, %eax
        jnz     4f
        movw    $msg_tick, %si
        call    puts
        call    print_dec
        movw    $msg_mm, %si
        call    puts
        movl    ST_MM, %eax
        call    print_dec
        movw    $msg_ram, %si
        call    puts
        movl    ST_RAMERR, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts
4:
        # Heartbeat: answer the pings that came in on COM2.
        call    agent_poll
        # Pause.  The guest spends most of its time here, halted: a stop
        # here is a "safe point" (next disk access: the read of disk 0).
        .if DELAY_US
        movw    $(DELAY_US >> 16), %cx
        movw    $(DELAY_US & 0xffff), %dx
        movb    $0x86, %ah
        int     $0x15
        .endif
        jmp     main_loop

# read_record: reads the record sector of drive DL into BX; DI = expected
# disk index.  EAX = its counter.  Does not return when the record is the
# hang marker (hang) or not valid (panic).
read_record:
        pushw   %si
        pushl   %ecx
        pushw   %dx
        movl    $REC_LBA, %eax
        movw    $1, %cx
        movb    $0x42, %dh
        call    disk_io
        movw    %bx, %si
        cmpl    $HANG_MAGIC_LO, (%si)   # "RWGH"
        jne     1f
        cmpl    $HANG_MAGIC_HI, 4(%si)  # "ANG!"
        je      hang
1:      cmpl    $0x55475752, (%si)      # "RWGU"
        jne     panic
        cmpl    $0x31545345, 4(%si)     # "EST1"
        jne     panic
        movzwl  %di, %ecx
        cmpl    %ecx, 16(%si)
        jne     panic
        movl    8(%si), %ecx
        notl    %ecx
        cmpl    %ecx, 12(%si)
        jne     panic
        movl    8(%si), %eax
        popw    %dx
        popl    %ecx
        popw    %si
        ret

# panic: the record sector of drive DL is not valid.  Prints PANIC, signals
# the panic through pvpanic (ignored when there is no such device) and stops
# for good, as a kernel does after a panic.
panic:
        movw    $msg_panic, %si
        call    print_where
        movw    $PVPANIC_PORT, %dx
        movb    $PVPANIC_PANICKED, %al
        outb    %al, %dx
        cli
1:      hlt
        jmp     1b

# hang: the record sector of drive DL holds the hang marker.  Prints HANG and
# stops for good with interrupts off; no pvpanic, so QEMU sees a running
# guest that does nothing (and answers no ping).  It halts rather than
# spins so that a hung test guest does not cost a host CPU under TCG; from
# the outside the two look the same.
hang:
        movw    $msg_hang, %si
        call    print_where
        cli
1:      hlt
        jmp     1b

# print_where: prints the string at SI, then "drive=<DL> lba=<REC_LBA>" and
# the line end.
print_where:
        call    puts
        movzbl  %dl, %eax
        call    print_dec
        movw    $msg_lba, %si
        call    puts
        movl    $REC_LBA, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts
        ret

# com2_init: finds out whether COM2 is there (its scratch register keeps
# what is written to it; an empty port reads 0xff), sets VAR_COM2 and, when
# it is, sets it up like COM1: 8N1, FIFO on and cleared, no interrupts.
com2_init:
        pushal
        movl    $0, VAR_COM2
        movw    $COM2+7, %dx            # scratch register
        movb    $0x5a, %al
        outb    %al, %dx
        inb     %dx, %al
        cmpb    $0x5a, %al
        jne     1f
        movb    $0xa5, %al
        outb    %al, %dx
        inb     %dx, %al
        cmpb    $0xa5, %al
        jne     1f
        movl    $1, VAR_COM2
        movw    $COM2+1, %dx            # IER: no interrupts
        xorb    %al, %al
        outb    %al, %dx
        movw    $COM2+3, %dx            # LCR: DLAB
        movb    $0x80, %al
        outb    %al, %dx
        movw    $COM2, %dx              # divisor 1: 115200
        movb    $1, %al
        outb    %al, %dx
        movw    $COM2+1, %dx
        xorb    %al, %al
        outb    %al, %dx
        movw    $COM2+3, %dx            # 8N1
        movb    $3, %al
        outb    %al, %dx
        movw    $COM2+2, %dx            # FIFO on, cleared
        movb    $0xc7, %al
        outb    %al, %dx
        movw    $COM2+4, %dx            # DTR, RTS; OUT2 off: no IRQ
        movb    $3, %al
        outb    %al, %dx
1:      popal
        ret

# agent_poll: the heartbeat.  Reads what COM2 has received (at most
# COM2_DRAIN_MAX bytes) and answers each "\n" with msg_pong on COM2.
agent_poll:
        cmpl    $0, VAR_COM2
        je      3f
        pushal
        movw    $COM2_DRAIN_MAX, %cx
1:      movw    $COM2+5, %dx            # LSR: data ready?
        inb     %dx, %al
        testb   $0x01, %al
        jz      2f
        movw    $COM2, %dx
        inb     %dx, %al
        cmpb    $'\n', %al
        jne     4f
        movw    $msg_pong, %si
        call    com2_puts
4:      loop    1b
2:      popal
3:      ret

# com2_puts: writes the NUL-terminated string at DS:SI to COM2.  A byte the
# transmitter does not take within 65535 polls is dropped (a peer that went
# away must not stop the guest).  Keeps all registers.
com2_puts:
        pushal
1:      lodsb
        testb   %al, %al
        jz      4f
        movb    %al, %bl
        movw    $COM2+5, %dx
        movw    $0xffff, %cx
2:      inb     %dx, %al
        testb   $0x20, %al              # LSR: transmitter holding register empty
        jnz     3f
        loop    2b
        jmp     1b
3:      movw    $COM2, %dx
        movb    %bl, %al
        outb    %al, %dx
        jmp     1b
4:      popal
        ret

# write_records: writes C to disk 0's record, then to disk 1's.
write_records:
        pushal
        movw    $BUF_WR, %di
        movw    $256, %cx
        xorw    %ax, %ax
        rep stosw
        movl    $0x55475752, BUF_WR     # "RWGU"
        movl    $0x31545345, BUF_WR+4   # "EST1"
        movl    VAR_C, %eax
        movl    %eax, BUF_WR+8
        notl    %eax
        movl    %eax, BUF_WR+12
        movl    $0, BUF_WR+16
        movl    $REC_LBA, %eax
        movw    $BUF_WR, %bx
        movw    $1, %cx
        movb    $DRIVE0, %dl
        movb    $0x43, %dh
        call    disk_io
        movl    $1, BUF_WR+16
        movb    $DRIVE1, %dl
        call    disk_io
        popal
        ret

# read_status: reads the status sector of disk 0 into BUF_STAT; zeroes it
# and sets the magic when the magic is wrong.
read_status:
        pushal
        movl    $STATUS_LBA, %eax
        movw    $BUF_STAT, %bx
        movw    $1, %cx
        movb    $DRIVE0, %dl
        movb    $0x42, %dh
        call    disk_io
        cmpl    $0x53475752, BUF_STAT       # "RWGS"
        jne     1f
        cmpl    $0x31544154, BUF_STAT+4     # "TAT1"
        je      2f
1:      movw    $BUF_STAT, %di
        movw    $256, %cx
        xorw    %ax, %ax
        rep stosw
        movl    $0x53475752, BUF_STAT
        movl    $0x31544154, BUF_STAT+4
2:      popal
        ret

# write_status: writes BUF_STAT to the status sector of disk 0.
write_status:
        pushal
        movl    $STATUS_LBA, %eax
        movw    $BUF_STAT, %bx
        movw    $1, %cx
        movb    $DRIVE0, %dl
        movb    $0x43, %dh
        call    disk_io
        popal
        ret

# report_mismatch: counts a mismatch of C, VAR_D0, VAR_D1 in the status
# sector (read afresh from disk 0, so the count on disk is the truth) and
# prints it.
report_mismatch:
        pushal
        call    read_status
        incl    ST_MM
        movl    VAR_C, %eax
        movl    %eax, ST_LAST_C
        movl    VAR_D0, %eax
        movl    %eax, ST_LAST_D0
        movl    VAR_D1, %eax
        movl    %eax, ST_LAST_D1
        call    write_status
        movw    $msg_mismatch, %si
        call    puts
        movl    VAR_C, %eax
        call    print_dec
        movw    $msg_d0, %si
        call    puts
        movl    VAR_D0, %eax
        call    print_dec
        movw    $msg_d1, %si
        call    puts
        movl    VAR_D1, %eax
        call    print_dec
        movw    $msg_mm, %si
        call    puts
        movl    ST_MM, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts
        popal
        ret

# report_rambad: BX = first bad page.  Counts it in the status sector and
# prints it.
report_rambad:
        pushal
        call    read_status
        incl    ST_RAMERR
        movl    VAR_C, %eax
        movl    %eax, ST_RAMERR_C
        call    write_status
        movw    $msg_rambad, %si
        call    puts
        call    print_dec
        movw    $msg_page, %si
        call    puts
        movzwl  %bx, %eax
        call    print_dec
        movw    $msg_ram, %si
        call    puts
        movl    ST_RAMERR, %eax
        call    print_dec
        movw    $msg_crlf, %si
        call    puts
        popal
        ret

# pattern_word: AX = the 16-bit word filling page BX for counter VAR_C:
# (C & 0xffff) ^ (page * 0x1111) ^ 0x5aa5.
pattern_word:
        pushw   %dx
        movw    %bx, %ax
        movw    $0x1111, %dx
        mulw    %dx
        xorw    VAR_C, %ax
        xorw    $0x5aa5, %ax
        popw    %dx
        ret

# fill_pattern: fills the 16 pages at 0x20000 with the pattern of C.
fill_pattern:
        pushal
        pushw   %es
        movw    $PATTERN_SEG, %ax
        movw    %ax, %es
        xorw    %di, %di
        xorw    %bx, %bx
1:      call    pattern_word
        movw    $2048, %cx
        rep stosw
        incw    %bx
        cmpw    $PATTERN_PAGES, %bx
        jb      1b
        popw    %es
        popal
        ret

# check_pattern: ZF set when all 16 pages hold the pattern of C; else ZF
# clear and BX = the first bad page.
check_pattern:
        pushw   %es
        pushw   %di
        pushw   %cx
        pushw   %ax
        movw    $PATTERN_SEG, %ax
        movw    %ax, %es
        xorw    %di, %di
        xorw    %bx, %bx
1:      call    pattern_word
        movw    $2048, %cx
        repe scasw
        jne     2f
        incw    %bx
        cmpw    $PATTERN_PAGES, %bx
        jb      1b
        xorw    %ax, %ax                # all good: ZF set
2:      popw    %ax
        popw    %cx
        popw    %di
        popw    %es
        ret

msg_boot:       .asciz "BOOT boots="
msg_tick:       .asciz "TICK C="
msg_mm:         .asciz " mm="
msg_ram:        .asciz " ram="
msg_mismatch:   .asciz "MISMATCH ram="
msg_d0:         .asciz " d0="
msg_d1:         .asciz " d1="
msg_rambad:     .asciz "RAMBAD C="
msg_page:       .asciz " page="
msg_panic:      .asciz "PANIC drive="
msg_hang:       .asciz "HANG drive="
msg_pong:       .asciz "{\"return\": {}}\n"
