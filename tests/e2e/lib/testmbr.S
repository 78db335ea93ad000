/* diskfarm e2e test MBR: 512 bytes, GNU as (.code16), built by testmbr.sh.
 *
 * Loaded by the BIOS (or by iPXE's sanboot) at 0000:7c00 with the boot drive
 * in DL.  On COM1 (0x3f8) it prints:
 *   "DFMBR-START\r\n"
 *   "DFMBR-LBA1 <the NUL-terminated string found at the start of LBA 1>\r\n"
 *     (int 13h AH=42h extended read: proves reads reach the disk)
 *   writes LBA 2 with "DFMBR-WRITTEN" (int 13h AH=43h), then reads LBA 2
 *   back and prints "DFMBR-LBA2 <string read back>\r\n"
 *   "DFMBR-BOOT <NN>\r\n": a boot counter, the first byte of LBA 3 read,
 *     incremented, printed in hex and written back (01 on a fresh cache;
 *     02, 03... when the writes of earlier boots survive)
 *   "DFMBR-DONE\r\n" and halts.
 * Any int 13h failure prints "DFMBR-ERR-<R|W|V> <AH in hex>\r\n" and halts.
 */
        .code16
        .section .text
        .globl _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        sti
        cld
        movb    %dl, drive

        movw    $msg_start, %si
        call    puts

        /* read LBA 1 -> 0x8000 */
        movw    $1, dap_lba
        movb    $0x42, %ah
        call    disk_io
        jc      err_read
        movw    $msg_lba1, %si
        call    puts
        movw    $0x8000, %si
        call    puts_data
        movw    $msg_crlf, %si
        call    puts

        /* fill 0x8000 with the write marker (NUL padded), write LBA 2 */
        movw    $0x8000, %di
        movw    $256, %cx
        xorw    %ax, %ax
        rep stosw
        movw    $msg_written, %si
        movw    $0x8000, %di
1:      lodsb
        stosb
        testb   %al, %al
        jnz     1b
        movw    $2, dap_lba
        movw    $0x4300, %ax
        call    disk_io_al
        jc      err_write

        /* clear, read LBA 2 back, print */
        movw    $0x8000, %di
        movw    $256, %cx
        xorw    %ax, %ax
        rep stosw
        movb    $0x42, %ah
        call    disk_io
        jc      err_verify
        movw    $msg_lba2, %si
        call    puts
        movw    $0x8000, %si
        call    puts_data
        movw    $msg_crlf, %si
        call    puts

        /* boot counter: LBA 3 byte 0, incremented and written back */
        movw    $3, dap_lba
        movb    $0x42, %ah
        call    disk_io
        jc      err_read
        incb    0x8000
        movw    $msg_boot, %si
        call    puts
        movb    0x8000, %al
        call    puthex
        movw    $msg_crlf, %si
        call    puts
        movw    $0x4300, %ax
        call    disk_io_al
        jc      err_write

        movw    $msg_done, %si
        call    puts
halt:   hlt
        jmp     halt

err_read:
        movb    $'R', %bl
        jmp     err_common
err_write:
        movb    $'W', %bl
        jmp     err_common
err_verify:
        movb    $'V', %bl
err_common:
        pushw   %ax
        movw    $msg_err, %si
        call    puts
        movb    %bl, %al
        call    putc
        movb    $' ', %al
        call    putc
        popw    %ax
        movb    %ah, %al
        call    puthex
        movw    $msg_crlf, %si
        call    puts
        jmp     halt

/* int 13h extended call: AH = function, AL = 0; DAP at dap */
disk_io:
        xorb    %al, %al
disk_io_al:
        movw    $dap, %si
        movb    drive, %dl
        int     $0x13
        ret

/* print the NUL-terminated string at DS:SI */
puts:
        lodsb
        testb   %al, %al
        jz      2f
        call    putc
        jmp     puts
2:      ret

/* print at most 48 printable bytes of DS:SI, stopping at NUL */
puts_data:
        movw    $48, %cx
3:      lodsb
        testb   %al, %al
        jz      5f
        cmpb    $0x20, %al
        jb      4f
        cmpb    $0x7e, %al
        jbe     6f
4:      movb    $'.', %al
6:      call    putc
        loop    3b
5:      ret

/* print AL as two hex digits */
puthex:
        pushw   %ax
        shrb    $4, %al
        call    hexdigit
        popw    %ax
        andb    $0x0f, %al
hexdigit:
        addb    $'0', %al
        cmpb    $'9', %al
        jbe     putc
        addb    $7, %al
/* write AL to COM1, waiting for the transmitter holding register */
putc:
        pushw   %dx
        pushw   %ax
        movw    $0x3fd, %dx
7:      inb     %dx, %al
        testb   $0x20, %al
        jz      7b
        popw    %ax
        movw    $0x3f8, %dx
        outb    %al, %dx
        popw    %dx
        ret

        .p2align 2
dap:    .byte   0x10, 0
        .word   1               /* sectors */
        .word   0x8000, 0       /* buffer offset, segment */
dap_lba: .long  0, 0
drive:  .byte   0x80

msg_start:   .asciz "DFMBR-START\r\n"
msg_lba1:    .asciz "DFMBR-LBA1 "
msg_lba2:    .asciz "DFMBR-LBA2 "
msg_written: .asciz "DFMBR-WRITTEN"
msg_boot:    .asciz "DFMBR-BOOT "
msg_done:    .asciz "DFMBR-DONE\r\n"
msg_err:     .asciz "DFMBR-ERR-"
msg_crlf:    .asciz "\r\n"

        .org    510
        .byte   0x55, 0xaa
